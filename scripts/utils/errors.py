"""Exceptions that map to the exit codes of docs/design.md.

``InputError`` means bad input or usage (exit 2) and carries where the
problem is (file, line, column, tag...) so the CLI wrapper can print one JSON
error record. ``CheckFailed`` means a check ran and failed (exit 1).
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3  # a bug in this project, not in the user's input
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """Bad input or usage: exit 2 with one JSON record naming the problem."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, file=None, line=None, column=None, **details):
        super().__init__(message)
        self.message = message
        self.details = {"file": None if file is None else str(file), "line": line, "column": column}
        self.details.update(details)

    def record(self) -> dict:
        """The fields of the JSON error record (``None`` values left out)."""
        fields = {"error": self.message}
        fields.update({k: v for k, v in self.details.items() if v is not None})
        return fields


class CheckFailed(Exception):
    """A verification ran and found a difference: exit 1."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def record(self) -> dict:
        fields = {"error": self.message}
        fields.update(self.details)
        return fields


# Failures of the machine, not of this code: a full disk, a file over the size
# limit, a read-only or unwritable place, an I/O error, a folder where a file
# (a lock, a record) must be or the reverse, a name too long or a link loop.
# Exit 2, naming the file.
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EEXIST,
        getattr(errno, "EDQUOT", errno.ENOSPC),
    }
)


def environment_failure(exc: BaseException) -> InputError | None:
    """The InputError for an OSError the environment caused (see ENVIRONMENT_ERRNOS), else None."""
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    return InputError(
        f"cannot read or write: {exc.strerror or exc}",
        file=exc.filename,
        errno=errno.errorcode.get(exc.errno),
    )
