"""Exceptions that map to the exit codes of design.md.

``InputError`` means bad input or usage (exit 2) and carries where the
problem is (file, line, column, tag...) so the CLI wrapper can print one JSON
error record. ``CheckFailed`` means a check ran and failed (exit 1).
"""

from __future__ import annotations

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
