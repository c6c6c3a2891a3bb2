"""Task heads shared by every encoder (``suite.heads``); importing registers every head."""
