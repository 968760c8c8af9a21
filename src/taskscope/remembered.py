"""The rules and relations files a store remembers: a user gives `--rules mine.toml` once, and
every later ingest into that store (a live dashboard's included) reads its logs with them.

A store keeps each file's text (not its path), so it goes on working when the file moves or the
store is copied elsewhere; giving a file again (edited, say) replaces the text kept under its path.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb

_TABLE = "user_files"  # made with the other tables (`taskscope.schema`)
KINDS = ("rules", "relations")


@dataclass(frozen=True)
class RememberedFiles:
    """The files to read rules and relations from: those given now and those a store keeps."""

    rules: list[str]
    relations: list[str]
    remembered_names: list[str]  # those not given now, by name: what the ingest says it used
    originals: dict[str, str]  # the temporary copy's path -> the path the file was given as

    def as_given(self, text: str) -> str:
        """`text` (a message naming files) with each temporary copy named as the user gave it.

        >>> RememberedFiles([], [], [], {"/tmp/x/0/mine.toml": "/home/me/mine.toml"}).as_given("rule 1 of /tmp/x/0/mine.toml")
        'rule 1 of /home/me/mine.toml'
        """
        for copy, original in self.originals.items():
            text = text.replace(copy, original)
        return text


def remember(con: duckdb.DuckDBPyConnection, kind: str, paths: list[str | Path] | None) -> None:
    """Keep the text of each file of `paths` in the store, as `kind` (`rules` or `relations`).

    >>> remember(store.con, "rules", ["mine.toml"])  # doctest: +SKIP
    """
    for path in paths or []:
        key = str(Path(path).resolve())
        text = Path(path).read_text(encoding="utf-8")
        con.execute(
            f"""INSERT INTO {_TABLE} VALUES (?, ?, ?, (SELECT coalesce(max(added), 0) + 1 FROM {_TABLE}))
                ON CONFLICT (kind, path) DO UPDATE SET text = excluded.text""",
            [kind, key, text],
        )


def forget(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Forget every rules and relations file the store keeps; returns their names. Events they
    named keep their names.

    >>> forget(store.con)  # doctest: +SKIP
    ['mine.toml']
    """
    names = [Path(path).name for (path,) in con.execute(f"SELECT path FROM {_TABLE} ORDER BY added").fetchall()]
    con.execute(f"DELETE FROM {_TABLE}")
    return names


def remembered(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """(kind, path, text) of every file the store keeps, in the order they were first given."""
    return [tuple(row) for row in con.execute(f"SELECT kind, path, text FROM {_TABLE} ORDER BY added").fetchall()]


@contextmanager
def remembered_files(con: duckdb.DuckDBPyConnection, given: dict[str, list[str | Path] | None]) -> Iterator[RememberedFiles]:
    """The rules and relations files to read for an ingest: those `given` now (kind -> paths),
    which the store then keeps, and those it kept before, in the order first given.

    The kept texts are written to a temporary folder for the block, under their own file names,
    so that they load (and any message about them reads) as the files the user gave.

    >>> with remembered_files(store.con, {"rules": ["mine.toml"]}) as files:  # doctest: +SKIP
    ...     files.rules
    ['/tmp/.../1/mine.toml']
    """
    for kind in KINDS:
        remember(con, kind, given.get(kind))
    given_now = {str(Path(path).resolve()) for kind in KINDS for path in given.get(kind) or []}
    with tempfile.TemporaryDirectory(prefix="taskscope-remembered-") as folder:
        files: dict[str, list[str]] = {kind: [] for kind in KINDS}
        names, originals = [], {}
        for number, (kind, path, text) in enumerate(remembered(con)):
            copy = Path(folder) / str(number) / Path(path).name
            copy.parent.mkdir()
            copy.write_text(text, encoding="utf-8")
            files[kind].append(str(copy))
            originals[str(copy)] = path
            if path not in given_now:
                names.append(Path(path).name)
        yield RememberedFiles(rules=files["rules"], relations=files["relations"], remembered_names=names,
                              originals=originals)
