"""What every file one stage hands another shares: a schema name and an integer version, checked before any field
is read.

A reader never guesses a file's shape from the keys it lacks: the file says what it is. A file of the release before
records carried their schema (no schema name) is read as that release's version through its record's one named
migration; an unknown schema, or a version newer than this release writes, is refused in one line that names the file,
what it holds and the fix.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from spinn_export.errors import UserError

T = TypeVar("T")

PREVIOUS = 1  # the version a JSON file of the release before records carried their schema is read as
UPGRADE = "upgrade spinn-export to read it"


@dataclass(frozen=True)
class Schema:
    """One file kind: `name` and `version` (what this release writes) under `schema_key` and `version_key`.

    `previous` is the version an unstamped file (the previous release's) is read as; `unstamped` what that release
    left under `schema_key` (None: nothing; the manifest and sweep.json wrote the integer 1). `rewrite` says how to
    get a file this release reads, for the one-line refusal.
    """

    name: str
    version: int
    what: str
    rewrite: str
    previous: int = PREVIOUS
    unstamped: tuple[object, ...] = (None,)
    schema_key: str = "schema"
    version_key: str = "version"

    def stamp(self) -> dict[str, Any]:
        """The keys this release writes first in every file of this kind."""
        return {self.schema_key: self.name, self.version_key: self.version}

    def version_of(self, data: Mapping[str, Any], path: str | os.PathLike[str]) -> int:
        """The file's version: `previous` for an unstamped file, else its own, refused if unknown or newer."""
        if not isinstance(data, Mapping):
            raise UserError(f"{path} holds {type(data).__name__}, not a {self.what}; {self.rewrite}")
        found = data.get(self.schema_key)
        if found in self.unstamped and not isinstance(found, bool):
            return self.previous
        if found != self.name:
            raise UserError(f"{path}: schema {found!r} is not a {self.what} ({self.name!r}); {self.rewrite}")
        raw = data.get(self.version_key)
        try:
            version = int(raw)
        except (TypeError, ValueError):
            raise UserError(f"{path}: {self.what} version {raw!r} is not a whole number; the file is damaged, "
                            f"{self.rewrite}") from None
        if version > self.version:
            raise UserError(f"{path}: {self.what} version {version} is newer than this spinn-export reads "
                            f"({self.name} {self.version}); {UPGRADE}")
        if version < self.previous:
            raise UserError(f"{path}: {self.what} version {version} is older than this spinn-export reads; "
                            f"{self.rewrite}")
        return version

    def parse(self, data: Mapping[str, Any], path: str | os.PathLike[str],
              migrate: Callable[[dict[str, Any]], dict[str, Any]], build: Callable[[dict[str, Any]], T]) -> T:
        """`build` of the file's fields at this release's version (the previous release's through `migrate`); a
        field that does not parse is refused in one line."""
        version = self.version_of(data, path)
        try:
            return build(unstamped(migrate(dict(data)) if version == self.previous else dict(data), self))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self.refuse(path, exc) from None

    def refuse(self, path: str | os.PathLike[str], exc: Exception) -> UserError:
        """A file of this kind whose fields do not parse: one line naming it, the failure and the fix."""
        return UserError(f"{path} is not a valid {self.what} ({type(exc).__name__}: {exc}); {self.rewrite}")


def unstamped(data: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
    """The file's fields less its stamp (what `from_dict` of a record gives its dataclass)."""
    return {k: v for k, v in data.items() if k not in (schema.schema_key, schema.version_key)}


def read_json(path: str | os.PathLike[str], schema: Schema) -> Any:
    """A record's JSON file parsed, or one line naming it, the failure and the fix."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise schema.refuse(path, exc) from None
