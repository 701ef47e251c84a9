"""One exception type for mistakes the user can fix, so the CLI can print one line and exit."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input: the message names it and says what to do."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SettingError(UserError):
    """A bad value of a setting, named in `template` as `{setting}` (its field name, e.g. `{round_to}`), so that each
    front end names it its own way: the message reads with field names, and `named(name)` renames them (the CLI
    gives its flags: `--round-to`). Other placeholders are filled from `values`."""

    def __init__(self, template: str, **values: object) -> None:
        self.template, self.values = template, values
        super().__init__(self.named(lambda setting: setting))

    def named(self, name: Callable[[str], str]) -> str:
        """The message with every setting called `name(setting)`."""
        values = self.values

        class Names(dict[str, object]):
            def __missing__(self, setting: str) -> str:
                return name(setting)

        return self.template.format_map(Names(values))


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its type name when it has none), for one-line user errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_file(path: str | os.PathLike[str], what: str, hint: str) -> Path:
    """The path of an existing regular file, or a one-line error saying which `what` is missing and `hint`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such {what}; {hint}")
    if not p.is_file():
        raise UserError(f"{p} is not a file; {hint}")
    return p
