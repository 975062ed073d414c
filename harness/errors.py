"""Errors the CLI turns into one clear line and exit code 2.

Anything the user can fix (a bad key, a bad value, a file that does not parse, a fault that does not fit the
design) is a `UserError`; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2, no traceback."""


class ConfigError(UserError):
    """An experiment configuration that breaks a rule; the message names the key and the rule."""
