"""Engine: plain-Python model loading, prompt formats, grammars and tool-call parsing (no Home Assistant)."""
