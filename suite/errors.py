"""Errors a user can fix. The CLI prints their message in one line instead of a traceback."""


class UserError(Exception):
    """Base of every error caused by input (files, recipes, arguments); says how to fix it."""
