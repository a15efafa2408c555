"""Engine: plain-Python model loading, prompt formats, grammars, tool-call parsing.

Nothing here depends on Home Assistant.
"""
