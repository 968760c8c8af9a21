"""Every example in README.md and docs/*.md runs, as written, and shows what the docs say.

The convention the pages follow (docs/contributing.md describes it for writers):

- ```console blocks: each line starting with `$ ` is a shell command (a trailing `\\` continues
  it on the next line); the lines after it, up to the next command, are its output as the page
  shows it. The command must exit 0, and the shown output must be the real output, whole lines
  in the same order (runs of spaces collapsed), with a line `...` (or `…`) wherever lines are left
  out (assert_output_shown). A command shown with no output line at all has its output unshown.
- ```python blocks are executed; ```pycon blocks are run as doctests (their output is checked).
  The Python blocks of one page share one namespace, in page order.
- A text/data block with a title (```toml title="my_rules.toml"```) is written to that file in
  the page's folder, for the examples after it to use.
- A block whose previous non-blank line is `<!-- not run: REASON -->` is not run (servers that
  run until stopped, the demo's real Parsl run, the test suite itself). The set of such blocks is
  listed below in NOT_RUN: a block marked without being listed, or listed without being marked,
  fails the test, so nothing is skipped silently; and what can be checked of them without
  running them is (their taskscope commands parse, their make targets exist, their Python
  compiles and its imports resolve).
- Shell examples live only in console blocks: a bash/sh/shell block fails the test.

The strict site build (`mkdocs build --strict`) is not repeated here: `make test` runs
`make docs` first. Every page runs in a folder of its own holding `tests/corpus/` (the corpus
runs, copied) and, except on the pages that ingest it themselves (FRESH_PAGES), `tour.duckdb`
with the corpus already ingested: the ingest is done once per session and copied. Plain
`taskscope ...` commands run in this process (conftest.invoke); the others through bash.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import logging
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import invoke, parsl_env

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
TOUR_STORE = "tour.duckdb"
#: pages that start from the corpus alone and make the tour store themselves
FRESH_PAGES = {"README.md", "docs/getting-started.md"}
#: languages a fenced block may have; shell examples must be `console` so they run
RUN_LANGUAGES = {"console", "python", "pycon"}
SHOWN_LANGUAGES = {"text", "toml", "json", "yaml"}
#: every block marked `<!-- not run: ... -->`: (page, first line of the block)
NOT_RUN = {
    ("README.md", "$ make demo    # set up .venv, run a real Parsl workflow, ingest it, show what taskscope sees"),
    ("README.md", '$ pip install -e ".[parsl]"    # from a clone; ".[all]" adds the test and docs tools'),
    ("docs/getting-started.md", "$ make demo"),
    ("docs/getting-started.md", "$ taskscope ui --store tour.duckdb"),
    ("docs/contributing.md", "$ make test"),
    ("docs/contributing.md", "$ python -m pytest -q tests/test_docs.py -k readme"),
    ("docs/guide/dashboard.md", "$ taskscope ui --store tour.duckdb"),
    ("docs/guide/fleet-server.md", "$ taskscope fleet serve --store fleet.duckdb --port 8090"),
    ("docs/guide/fleet-server.md", "$ taskscope fleet upload tests/corpus/parsl-htex-jsonlog --server http://127.0.0.1:8090 --token tsf_..."),
    ("docs/guide/fleet-server.md", "from taskscope import fleet"),
    ("docs/guide/dask-plugin.md", "from distributed import Client, LocalCluster"),
    ("docs/guide/dask-plugin.md", "$ dask scheduler --preload taskscope.fleet.dask --fleet-server http://fleet.example.org:8090 --fleet-token tsf_..."),
    ("docs/guide/usage-tracking.md", "$ taskscope usage collect --port 50077 --store usage.duckdb --host 0.0.0.0 --retention-days 730"),
}


@dataclass
class Block:
    page: str
    line: int
    language: str
    body: str
    marked_not_run: bool
    title: str | None = None

    @property
    def first_line(self) -> str:
        return self.body.splitlines()[0] if self.body.strip() else ""


FENCE = re.compile(r"^```(\S*)")
TITLE = re.compile(r'title="([^"]+)"')
NOT_RUN_MARK = re.compile(r"^<!-- not run: .+ -->$")


def page_name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, in order. Fences are unindented (the pages' rule)."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            index += 1
            continue
        before = [line for line in lines[:index] if line.strip()]
        marked = bool(before) and bool(NOT_RUN_MARK.match(before[-1].strip()))
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if end == len(lines):
            pytest.fail(f"{page_name(path)}:{index + 1}: a code fence is never closed")
        title = TITLE.search(lines[index])
        found.append(Block(page_name(path), index + 1, opened.group(1), "\n".join(lines[index + 1:end]) + "\n",
                           marked, title.group(1) if title else None))
        index = end + 1
    return found


@dataclass
class Command:
    text: str
    shown_output: list[str]


def commands_of(block: Block) -> list[Command]:
    """The `$ ` commands of a console block with the output lines the page shows for each."""
    commands: list[Command] = []
    pending = ""
    for line in block.body.splitlines():
        if pending:
            pending += "\n" + line
        elif line.startswith("$ "):
            pending = line[2:]
        else:
            if not commands:
                if line.strip():
                    pytest.fail(f"{block.page}:{block.line}: output before any `$ ` command: {line!r}")
                continue
            commands[-1].shown_output.append(line)
            continue
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        commands.append(Command(pending, []))
        pending = ""
    if not commands:
        pytest.fail(f"{block.page}:{block.line}: a console block without a `$ ` command")
    return commands


def squeezed(text: str) -> str:
    return " ".join(text.split())


#: a shown output line that stands for one or more real lines left out
LEFT_OUT = {"...", "\u2026"}
def assert_output_shown(command: Command, output: str, where: str) -> None:
    """The shown output is the real output, with lines left out only where a shown line is `...`
    (or `\u2026`), each standing for one line or more. Every other shown line is a whole line of
    the real output (runs of spaces and trailing whitespace aside), in the same order; shown lines
    next to each other are real lines next to each other, and the first and last shown lines are
    the output's first and last unless a `...` comes before or after them. A command shown
    without any output line has its output not shown at all."""
    shown = [squeezed(line) for line in command.shown_output]
    while shown and not shown[-1]:
        shown.pop()  # blank lines between a command's output and the next command
    if not shown:
        return
    real = [squeezed(line) for line in output.splitlines()]
    while real and not real[-1]:
        real.pop()
    # the runs of shown lines between `...`s: the first starts the output unless a `...` leads,
    # each later one starts after at least one left-out line, the last ends the output unless a
    # `...` ends the shown lines
    runs: list[list[str]] = [[]]
    for line in shown:
        if line in LEFT_OUT:
            runs.append([])
        else:
            runs[-1].append(line)
    position = 0
    for number, run in enumerate(runs):
        if number == 0:
            if run and real[:len(run)] != run:
                fail_shown(command, output, where, "the output does not start with these lines (write `...` "
                           "where lines are left out):\n  " + "\n  ".join(run))
            position = len(run)
            continue
        starts = range(position + 1, len(real) - len(run) + 1)
        found = next((at for at in starts if real[at:at + len(run)] == run), None)
        if found is None:
            fail_shown(command, output, where, "a `...` stands for no line left out" if not run else
                       "these lines are not whole lines of the output, one after the other, after the "
                       "lines shown before them and one line left out or more:\n  " + "\n  ".join(run))
        position = found + len(run)
    if runs[-1] and position != len(real):
        fail_shown(command, output, where, "lines after the last one shown are left out without a `...`")


def fail_shown(command: Command, output: str, where: str, what: str) -> None:
    pytest.fail(f"{where}: `{command.text}` did not print what the page shows: {what}\n"
                f"its output was:\n{output}")


#: the terminal the pages' outputs were taken in: 100 columns (tables fit what the terminal has)
TERMINAL = {"COLUMNS": "100", "NO_COLOR": "1"}
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
SHELL_SYNTAX = re.compile(r"[|&;<>()$*?\[\]~`\\]")


def in_process_argv(text: str) -> list[str] | None:
    """The arguments of a plain `taskscope ...` command (no pipes, redirections, variables or
    globs), which runs in this process through Typer's runner; None for anything else."""
    argv = shlex.split(text, comments=True)
    if not argv or argv[0] != "taskscope" or SHELL_SYNTAX.search(QUOTED.sub("", text.split(" #")[0])):
        return None
    return argv[1:]


def run_command(text: str, folder: Path) -> tuple[int, str]:
    """Run one command as the page shows it: exit code and output (stdout and stderr)."""
    argv = in_process_argv(text)
    if argv is not None:
        done = invoke(*argv, env=TERMINAL)
    else:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=folder, env=dict(parsl_env(), **TERMINAL),
                              capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, done.stdout + done.stderr


def run_console(block: Block, folder: Path) -> None:
    """Run a console block's commands and check their output."""
    for command in commands_of(block):
        code, output = run_command(command.text, folder)
        where = f"{block.page}:{block.line}"
        assert code == 0, f"{where}: `{command.text}` exited {code}; its output:\n{output}"
        assert_output_shown(command, output, where)


def run_python(block: Block, namespace: dict) -> None:
    code = compile(block.body, f"{block.page}:{block.line}", "exec")
    exec(code, namespace)  # noqa: S102 - the page's own example


def run_pycon(block: Block, namespace: dict) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.body, namespace, f"{block.page}:{block.line}", block.page, block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, clear_globs=False)
    failed = runner.summarize(verbose=False).failed
    assert failed == 0, f"{block.page}:{block.line}: {failed} doctest example(s) failed (details above)"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A copy of tests/corpus (writable, so no example can change the repository's), which every
    page's folder links to as tests/corpus: one real path, as the store records real paths."""
    copy = tmp_path_factory.mktemp("docs_corpus") / "corpus"
    shutil.copytree(REPO / "tests" / "corpus", copy)
    for path in copy.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    return copy


@pytest.fixture(scope="session")
def tour_store(corpus, tmp_path_factory) -> Path:
    """tour.duckdb with the corpus ingested: ingested once per session, copied per page."""
    import taskscope

    path = tmp_path_factory.mktemp("docs_tour") / TOUR_STORE
    with taskscope.open(path) as store:
        store.ingest(corpus)
    return path


def test_pages_exist():
    assert (REPO / "README.md") in PAGES and len(PAGES) > 20, PAGES


def test_readme_starts_with_the_two_commands():
    first = blocks_of(REPO / "README.md")[0]
    assert first.language == "console" and [line.split("#")[0].strip() for line in first.body.splitlines()] == ["$ make demo", "$ make test"], first.body
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def test_every_block_has_a_known_language():
    unknown = [(block.page, block.line, block.language) for path in PAGES for block in blocks_of(path)
               if block.language not in RUN_LANGUAGES | SHOWN_LANGUAGES]
    assert not unknown, f"blocks that neither run nor are plain text/data (use console/python/pycon): {unknown}"
    shell_in_text = [(block.page, block.line) for path in PAGES for block in blocks_of(path)
                     if block.language == "text" and block.first_line.startswith("$ ")]
    assert not shell_in_text, f"commands in text blocks would not run; use console: {shell_in_text}"


def test_not_run_blocks_are_exactly_the_listed_ones():
    marked = {(block.page, block.first_line) for path in PAGES for block in blocks_of(path) if block.marked_not_run}
    assert marked == NOT_RUN, f"marked but not listed: {marked - NOT_RUN}; listed but not marked: {NOT_RUN - marked}"


@pytest.mark.slow
@pytest.mark.parametrize("page", [page_name(path) for path in PAGES])
def test_examples_run(page, corpus, tour_store, tmp_path, monkeypatch):
    """Run every example of `page` in order, in a folder of its own."""
    folder = tmp_path / "work"
    (folder / "tests").mkdir(parents=True)
    (folder / "tests" / "corpus").symlink_to(corpus, target_is_directory=True)
    if page not in FRESH_PAGES:
        shutil.copy(tour_store, folder / TOUR_STORE)
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__docs__"}
    root = logging.getLogger()
    level = root.level
    handlers = {logger: list(logger.handlers) for logger in all_loggers()}
    try:
        run_page(page, folder, namespace)
    finally:
        for logger in all_loggers():  # the page's own logging setup
            for handler in set(logger.handlers) - set(handlers.get(logger, [])):
                logger.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        close = getattr(namespace.get("store"), "close", None)
        if close:
            close()


def all_loggers() -> list[logging.Logger]:
    return [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                   if isinstance(logger, logging.Logger))]


def run_page(page: str, folder: Path, namespace: dict) -> None:
    for block in blocks_of(REPO / page):
        if block.marked_not_run:
            continue
        if block.title:
            (folder / block.title).write_text(block.body)
        elif block.language == "console":
            run_console(block, folder)
        elif block.language == "python":
            run_python(block, namespace)
        elif block.language == "pycon":
            run_pycon(block, namespace)


SHOWN_OUTPUT_CASES = [
    # (shown lines, passes) against the output "title / a  b / 1 2 / 3 4 / note"
    (["title", "a b", "1 2", "3 4", "note"], True),
    (["title  ", "a    b", "1 2", "3 4", "note"], True),  # runs of spaces and trailing blanks
    ([], True),  # output not shown at all
    (["title", "...", "note"], True),
    (["...", "1 2", "..."], True),
    (["\u2026", "3 4", "note"], True),
    (["title", "a b"], False),  # the lines after are left out without `...`
    (["a b", "1 2", "3 4", "note"], False),  # the first line is left out without `...`
    (["title", "1 2", "..."], False),  # a line left out between two shown lines
    (["title", "...", "a b", "..."], False),  # `...` for no line
    (["title", "...", "note", "..."], False),  # `...` after the last line
    (["title", "...", "1", "..."], False),  # part of a line
    (["title", "...", "3 4", "1 2", "..."], False),  # out of order
]


@pytest.mark.parametrize(("shown", "passes"), SHOWN_OUTPUT_CASES)
def test_shown_output_is_whole_lines_in_order(shown, passes):
    """The check of a command's shown output: whole lines, in order, `...` where lines are left out."""
    output = "title\na  b  \n1 2\n3 4\nnote\n"
    command = Command("taskscope example", list(shown))
    if passes:
        assert_output_shown(command, output, "case")
    else:
        with pytest.raises(pytest.fail.Exception):
            assert_output_shown(command, output, "case")


def test_version_option_prints_the_package_version():
    """`taskscope --version` prints the installed distribution's version, before any command and
    without touching a store; the getting-started page and the CLI reference show it."""
    from importlib.metadata import version

    import taskscope

    assert taskscope.__version__ == version("taskscope")
    done = invoke("--version")
    assert (done.returncode, done.stdout) == (0, f"taskscope {taskscope.__version__}\n"), done
    done = invoke("--version", "runs", "--store", "no-such-store.duckdb")
    assert (done.returncode, done.stdout) == (0, f"taskscope {taskscope.__version__}\n"), done
    assert "taskscope --version" in (REPO / "docs" / "getting-started.md").read_text()
    assert "--version" in invoke("--help", env=TERMINAL).stdout


def test_cli_reference_covers_nested_commands():
    """The reference page's hook renders every command, subcommands of subcommands too (the
    strict `mkdocs build` itself runs in `make docs`, which `make test` runs)."""
    sys.path.insert(0, str(REPO / "docs" / "_hooks"))
    try:
        import cli_reference
    finally:
        sys.path.remove(str(REPO / "docs" / "_hooks"))
    page = cli_reference.cli_reference()
    for title in ("taskscope", "taskscope ingest", "taskscope usage collect", "taskscope fleet token revoke"):
        assert f"## `{title}`\n" in page
    assert "Usage: taskscope fleet token revoke" in page


def test_events_page_lists_the_events_contract():
    """The events page's column table is the store's `events` contract: names, order and types."""
    from taskscope.schema import EVENT_COLUMNS

    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", (REPO / "docs" / "guide" / "events.md").read_text(), re.MULTILINE)
    public = [(name, sql_type) for name, sql_type in EVENT_COLUMNS if name != "file_id"]
    assert rows == public, f"docs/guide/events.md lists {rows}; the store has {public}"


@pytest.mark.slow
def test_every_table_of_a_store_is_documented(tour_store):
    """The tables of an ingested store (`SHOW TABLES`) are those the events page describes and
    those `taskscope sql --help` names."""
    import duckdb

    with duckdb.connect(str(tour_store), read_only=True) as con:
        tables = {name for (name,) in con.execute("SHOW TABLES").fetchall()}
    other_tables = (REPO / "docs" / "guide" / "events.md").read_text().split("## The other tables", 1)[1]
    described = {"events"} | set(re.findall(r"^\| `(\w+)` \|", other_tables, re.MULTILINE))
    assert described == tables, f"docs/guide/events.md describes {sorted(described)}; a store has {sorted(tables)}"
    named = set(re.findall(r"\w+", invoke("sql", "--help", env={"COLUMNS": "300"}).stdout))
    assert tables <= named, f"`taskscope sql --help` leaves out {sorted(tables - named)}"


def test_no_example_hides_from_the_harness():
    """Examples the parser would not see: indented or `~~~` fences, indented code blocks of
    commands or Python prompts. The pages write every example as an unindented ``` fence."""
    hidden = []
    for path in PAGES:
        in_fence = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("```"):
                in_fence = not in_fence
            elif not in_fence and (re.match(r"^\s+(```|~~~)|^~~~", line)
                                   or re.match(r"^(    |\t)\s*(\$ |>>> )", line)):
                hidden.append(f"{page_name(path)}:{number}: {line.strip()}")
    assert not hidden, "examples the docs test cannot see:\n" + "\n".join(hidden)


def parse_taskscope(argv: list[str]) -> None:
    """Parse `taskscope ARGV` as the CLI would (subcommands, options, their types) without running it."""
    import typer.main

    from taskscope.cli import app

    command, name = typer.main.get_command(app), "taskscope"
    while argv and argv[0] in getattr(command, "commands", {}):
        name, command, argv = argv[0], command.commands[argv[0]], argv[1:]
    command.make_context(name, list(argv))


def test_not_run_examples_still_parse():
    """What the not-run blocks can be checked for without running them: their taskscope commands
    parse (a renamed option fails here), their make targets exist, the Dask preload takes their
    options, their Python compiles and its imports resolve."""
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.MULTILINE))
    for path in PAGES:
        for block in blocks_of(path):
            if not block.marked_not_run:
                continue
            where = f"{block.page}:{block.line}"
            if block.language == "python":
                tree = ast.parse(block.body, where)
                imports = ast.Module([node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))], [])
                exec(compile(imports, where, "exec"), {})  # noqa: S102 - the page's own imports
                continue
            for command in commands_of(block):
                argv = shlex.split(command.text, comments=True)
                if argv[0] == "taskscope":
                    parse_taskscope(argv[1:])
                elif argv[0] == "make":
                    assert set(argv[1:]) <= targets, f"{where}: no such make target in {argv}"
                elif argv[:2] == ["dask", "scheduler"]:
                    preload = importlib.import_module(argv[argv.index("--preload") + 1])
                    known = {"--preload"} | {opt for param in preload.dask_setup.params for opt in param.opts}
                    used = {word for word in argv[2:] if word.startswith("--")}
                    assert used <= known, f"{where}: {preload.__name__}.dask_setup has no {used - known}"
