"""Errors a user can fix, as opposed to bugs in layerwise.

The ``layerwise`` command prints a ``LayerwiseError`` (or an ``OSError`` such as a missing
file or a full disk) as one line ``error: ...`` on stderr and exits 1; anything else is a bug
and keeps its traceback, with a line asking to report it. In Python, each also derives from
the builtin a caller would expect (``ValueError`` for a bad file), so ``except ValueError``
keeps working.
"""


class LayerwiseError(Exception):
    """A mistake the user can fix; the message is one line that quotes the bad value."""


class RunError(LayerwiseError):
    """A problem with a run directory or its files that the user can fix (one line)."""


class BadFileError(LayerwiseError, ValueError):
    """A file that is not what it claims to be: truncated, crafted, or another format."""
