"""One exception type for mistakes the user can fix, so the CLI can print one line and exit."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: the message names it and says what to do."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
