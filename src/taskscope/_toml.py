"""Reading the TOML tables of rules and relations: the shipped ones and a user's files."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path


def shipped_tables(package: str) -> list[tuple[str, dict]]:
    """(file name, table) of every `*.toml` file of `package`, `parsl.toml` first.

    >>> [name for name, _ in shipped_tables("taskscope.relations")][0]
    'parsl.toml'
    """
    files = sorted((entry for entry in resources.files(package).iterdir() if entry.name.endswith(".toml")),
                   key=lambda entry: (entry.name != "parsl.toml", entry.name))
    return [(entry.name, tomllib.loads(entry.read_text())) for entry in files]


def read_user_table(path: Path, what: str, error: type[Exception]) -> dict:
    """The table of a user's TOML file; `error` (a one-line message naming `what` file it is)
    when it cannot be read or is not TOML."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise error(f"{what} file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} file {path} is not valid TOML: {exc}") from None
