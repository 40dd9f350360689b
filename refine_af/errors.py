"""The one exception type users see.

Anything raised as `RefineError` is a problem with the user's input or environment (a bad seed line, an unknown
config key, an unreachable S3 endpoint). The CLI prints its message on one line and exits with status 2; any other
exception is a bug and keeps its traceback.
"""


class RefineError(Exception):
    """A user-facing error: the message alone says what is wrong and where."""
