"""Reading the TOML tables of rules and relations: the shipped ones and a user's files."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from importlib import resources
from pathlib import Path

#: the array of tables each kind of file holds, and the option that takes such a file
_ENTRIES = {"rules": ("rule", "--rules"), "relations": ("relation", "--relations")}


@dataclass(frozen=True, kw_only=True)
class Declared:
    """Where a rule or a relation was declared: its file (a user's, as given, or the name of a
    shipped one) and its number there, from 1. The notes on entries that did nothing after an
    ingest are for a user's entries only: a shipped one finding nothing in another system's
    logs is normal.

    >>> Declared(origin="mine.toml", number=2).from_user, Declared(origin="parsl.toml", shipped=True).from_user
    (True, False)
    """

    origin: str = ""
    number: int = 0
    shipped: bool = False

    @property
    def from_user(self) -> bool:
        return bool(self.origin) and not self.shipped


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


def read_user_entries(path: Path, what: str, error: type[Exception]) -> list[dict]:
    """The entries of a user's `what` ("rules" or "relations") file: its `[[rule]]` or
    `[[relation]]` tables. `error` when the file holds anything else, or none of them: a file
    that does nothing is a mistake (a typo, the other kind of file), never a silent no-op.

    >>> read_user_entries(Path("mine.toml"), "rules", ValueError)  # doctest: +SKIP
    [{'event': 'sample.stage', 'pattern': '^sample (?P<task_id>\\\\S+)'}]
    """
    table = read_user_table(path, what, error)
    name, option = _ENTRIES[what]
    for key in table:
        if key != name:
            raise error(f"{what} file {path}: {_misplaced(key, what)}")
    entries = table.get(name, [])
    if not isinstance(entries, list):
        raise error(f"{what} file {path}: `{name}` must be an array of tables ([[{name}]]), not {type_name(entries)}")
    if not entries:
        raise error(f"{what} file {path} has no [[{name}]] entries: nothing to apply (leave out {option})")
    return entries


def _misplaced(key: str, what: str) -> str:
    """Why the top-level `key` does not belong in a `what` file."""
    name, _ = _ENTRIES[what]
    for other, (other_name, other_option) in _ENTRIES.items():
        if other != what and key == other_name:
            return f"[[{key}]] belongs in a {other} file (give it to {other_option}); a {what} file holds [[{name}]] entries"
    return f"unknown top-level key `{key}`{did_you_mean(key, [name])}; a {what} file holds [[{name}]] entries"


def unknown_key(entry: dict, known: Collection[str]) -> str | None:
    """The message for the first key of `entry` not in `known` (with the closest known key as a
    suggestion), or None when every key is known.

    >>> unknown_key({"loger": "parsl"}, ["event", "pattern", "logger"])
    'unknown key `loger` (did you mean `logger`?); known keys: event, pattern, logger'
    """
    for key in entry:
        if key not in known:
            return f"unknown key `{key}`{did_you_mean(key, known)}; known keys: {', '.join(known)}"
    return None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean `x`?)' for the choice closest to `word`, or '' when none is close.

    >>> did_you_mean("rules", ["rule"]), did_you_mean("zzz", ["rule"])
    (' (did you mean `rule`?)', '')
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def type_name(value: object) -> str:
    """What a TOML value is, as a message says it.

    >>> type_name(["a"]), type_name(5), type_name({"a": 1})
    ('a list', 'an integer', 'a table')
    """
    names = [(bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (list, "a list"),
             (dict, "a table"), ((datetime, date, time), "a date or time")]
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)
