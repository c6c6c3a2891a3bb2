"""Neural audio codecs (``suite.codecs``). Never import this folder as top-level ``codecs``."""
