"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user: a path, a model file, a flag, a camera. Message is one line."""

    exit_code = 2
