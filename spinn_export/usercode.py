"""The user's own Python, named on the command line as `PATH.py:NAME` or `module:NAME` (`--physics`, `--model-code`).

One loader for both, below every stage: a file is run as a module under a private name, compiled from its source as
it is now (never a stale __pycache__, nothing written beside it); a module name is imported. Every failure of the
user's code is one line naming the flag, the file and the name.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from spinn_export.errors import UserError, first_line, require_file


def names_file(target: str) -> bool:
    """Whether the part before `:` names a file (PATH.py) rather than an importable module."""
    return target.endswith(".py") or "/" in target


def absolute(text: str) -> str:
    """`PATH.py:NAME` with the path made absolute, so a worker in another directory imports the same file; a module
    name, or a malformed value (which `load_named` reports), is returned as it is."""
    target, _, name = text.rpartition(":")
    return f"{Path(target).resolve()}:{name}" if target and names_file(target) else text


def load_named(text: str, flag: str, form: str) -> tuple[Any, Path | None]:
    """The object `NAME` of `PATH.py:NAME` or `module:NAME`, and the file that defines it (when known)."""
    target, _, name = text.rpartition(":")
    if not target or not name.isidentifier():
        raise UserError(f"{flag} {text!r} names no function; {form}")
    if names_file(target):
        path: Path | None = require_file(target, f"{flag.lstrip('-')} file", f"check the path in {flag} {text}")
        module = _module_from_file(path, f"{flag} {text}")  # type: ignore[arg-type]
    else:
        module = _import_module(target, f"{flag} {text}")
        path = Path(module.__file__) if getattr(module, "__file__", None) else None
    found = getattr(module, name, None)
    if found is None:
        raise UserError(f"{flag} {text}: {path or target} defines no {name!r}; {form}")
    if not callable(found):
        raise UserError(f"{flag} {text}: {name} is a {type(found).__name__}, not a function; {form}")
    return found, path


def _module_from_file(path: Path, label: str) -> ModuleType:
    module = ModuleType(f"spinn_export_user_{abs(hash(path.resolve()))}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    try:
        exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    except Exception as exc:  # the user's module may fail in any way; each is one line naming it
        del sys.modules[module.__name__]
        raise UserError(f"{label}: importing {path} failed ({type(exc).__name__}: {first_line(exc)})") from None
    return module


def _import_module(module_name: str, label: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # ModuleNotFoundError, or the module's own error while it runs
        raise UserError(f"{label}: importing module {module_name!r} failed ({type(exc).__name__}: "
                        f"{first_line(exc)}); give an importable module or PATH.py:NAME") from None
