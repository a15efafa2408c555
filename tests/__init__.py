"""Tests of the Gemma Edge Agent integration."""
