"""MkDocs hook: the command-line reference, generated from `taskscope --help` at every build.

`docs/reference/cli.md` holds the marker `<!-- cli-reference -->`; this hook replaces it with the
`--help` text of every command and subcommand, as the installed `taskscope` prints it, so the
page cannot go stale.
"""

from __future__ import annotations

import typer.main
from typer.testing import CliRunner

MARKER = "<!-- cli-reference -->"
PAGE = "reference/cli.md"
WIDTH = "100"


def command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, depth first in the order `--help` lists them.

    >>> from taskscope.cli import app
    >>> ("fleet", "token", "create") in command_paths(typer.main.get_command(app))
    True
    """
    paths = [prefix]
    # a group has `commands` (Typer ships its own copy of click, so no isinstance on click.Group)
    for name, sub in getattr(group, "commands", {}).items():
        paths.extend(command_paths(sub, (*prefix, name)))
    return paths


def help_text(path: tuple[str, ...]) -> str:
    """What `taskscope PATH... --help` prints, at a fixed width and without colour."""
    from taskscope.cli import app

    result = CliRunner().invoke(app, [*path, "--help"], prog_name="taskscope",
                                env={"COLUMNS": WIDTH, "TERMINAL_WIDTH": WIDTH, "NO_COLOR": "1"})
    if result.exit_code != 0:
        raise RuntimeError(f"taskscope {' '.join(path)} --help failed: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())


def cli_reference() -> str:
    """The Markdown of the reference: one section per command, its `--help` verbatim."""
    from taskscope.cli import app

    sections = []
    for path in command_paths(typer.main.get_command(app)):
        title = " ".join(("taskscope", *path))
        sections.append(f"## `{title}`\n\n```text\n{help_text(path)}\n```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise RuntimeError(f"{PAGE} lost its marker {MARKER}")
    return markdown.replace(MARKER, cli_reference())
