"""Modality encoders (``suite.encoders``); importing this package registers every family."""
