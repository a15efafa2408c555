"""The benchmark runs in the test harness (a real Home Assistant); reuse the test fixtures."""

from tests.conftest import *  # noqa: F403
