"""Compressed files and runinfo archives are read in place, to the same events as unpacked.

"Send me a tarball of your runinfo": a `.tar.gz` or a `.zip` of a run ingests to the events of
its folder (each `file` named `<archive>!<member>`), a gzip'd log to those of the plain log,
and an unchanged archive given again adds nothing.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import taskscope
from conftest import CORPUS_RUNS, corpus_path

#: every public column but `file` (compared apart, without the archive's prefix)
COMPARED = ("ts, source, line, level, logger, event, template, message, host, pid, thread, run_id, task_id, "
            "try_id, app_name, task_state, executor_label, executor_task_id, block_id, job_id, manager_id, "
            "worker_id, attrs")


def pack(folder: Path, archive: Path) -> Path:
    """`folder`'s files in a new archive at `archive` (.tar.gz or .zip), named relative to it."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as packed:
            for path in files:
                packed.write(path, str(path.relative_to(folder)))
    else:
        with tarfile.open(archive, "w:gz") as packed:
            for path in files:
                packed.add(path, arcname=f"./{path.relative_to(folder)}")
    return archive


def events_of(path: Path, prefix: str = "") -> pd.DataFrame:
    """The events of `path` ingested into a new store, `prefix` cut from each `file`."""
    with taskscope.open(":memory:") as store:
        store.ingest(path)
        events = store.sql(f"SELECT file, {COMPARED} FROM events ORDER BY file, line")
    assert events.file.str.startswith(prefix).all(), events.file.head()
    events["file"] = events.file.str.slice(len(prefix))
    return events


@pytest.mark.parametrize("packing", ["tar.gz", "zip"])
@pytest.mark.parametrize("name", CORPUS_RUNS)
def test_an_archive_of_a_run_gives_the_events_of_its_folder(tmp_path, name, packing):
    run = corpus_path(name)
    archive = pack(run, tmp_path / f"{name}.{packing}")
    from_folder = events_of(run)
    from_archive = events_of(archive, prefix=f"{archive.name}!")
    assert len(from_folder) > 1000
    pd.testing.assert_frame_equal(from_archive, from_folder)
    assert {"000/parsl.log", "000/parsl.jsonlog"} & set(from_archive.file)
    assert any(file.startswith("monitoring.db#") for file in from_archive.file)


def test_an_unchanged_archive_adds_nothing_and_a_changed_one_is_read_again(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(corpus_path("parsl-mixed-textlog"), run)
    archive = pack(run, tmp_path / "runinfo.tgz")
    with taskscope.open(str(tmp_path / "s.duckdb")) as store:
        first = store.ingest(archive)
        assert first.files_read >= 8 and first.events > 1000
        again = store.ingest(archive)
        assert (again.events, again.files_read, again.files_unchanged) == (0, 0, first.files_read)
        note = store.sql("SELECT note FROM ingested_files WHERE file = 'runinfo.tgz'").note[0]
        assert note.startswith("archive of ") and note.endswith("read as runinfo.tgz!<file>")
        # an archive whose size and time are those it had is not even opened again
        packed, stat = archive.read_bytes(), archive.stat()
        archive.write_bytes(b"\0" * len(packed))
        os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        untouched = store.ingest(archive)
        assert (untouched.files_unchanged, untouched.files_unreadable, untouched.notes) == (first.files_read, 0, [])
        archive.write_bytes(packed)
        count = "SELECT count(*) AS n FROM events"
        stored = store.sql(count).n[0]

        worker = next(run.rglob("worker_0.log"))
        lines = worker.read_text().splitlines(keepends=True)
        worker.write_text("".join(lines[: len(lines) // 2]))  # the archive is made again, one log shorter
        pack(run, archive)
        changed = store.ingest(archive)
        assert any("changed since it was read" in note for note in changed.notes)
        assert store.sql(count).n[0] < stored
        assert store.sql("SELECT count(*) AS n FROM (SELECT file, line FROM events GROUP BY ALL HAVING count(*) > 1)").n[0] == 0
        pd.testing.assert_frame_equal(
            store.sql(f"SELECT {COMPARED} FROM events ORDER BY file, line"),
            events_of(run)[COMPARED.split(", ")],
        )


def test_gzipped_logs_give_the_events_of_the_plain_ones(tmp_path):
    plain = corpus_path("parsl-mixed-textlog")
    run = tmp_path / "run"
    shutil.copytree(plain, run)
    worker = next(path.relative_to(run) for path in run.rglob("worker_0.log"))
    for rel in (Path("000/parsl.log"), worker):
        with open(run / rel, "rb") as source, gzip.open(run / f"{rel}.gz", "wb") as packed:
            shutil.copyfileobj(source, packed)
        (run / rel).unlink()
    gzipped = events_of(run)
    gzipped["file"] = gzipped.file.str.removesuffix(".gz")
    pd.testing.assert_frame_equal(gzipped.sort_values(["file", "line"], ignore_index=True), events_of(plain))
    assert (gzipped.file == "000/parsl.log").sum() > 500
    assert gzipped.loc[gzipped.file == str(worker), "worker_id"].eq("0").all()


def test_a_damaged_archive_is_reported_and_the_rest_read(tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(corpus_path("parsl-htex-jsonlog") / "000", folder / "000")
    good = pack(folder, tmp_path / "good.zip").read_bytes()
    (folder / "cut.zip").write_bytes(good[: len(good) // 2])
    (folder / "cut.tar.gz").write_bytes(gzip.compress(b"\0" * 300 + b"ustar" + b"\0" * 300)[:40])
    parsl_log = (corpus_path("parsl-mixed-textlog") / "000" / "parsl.log").read_bytes()
    packed_log = gzip.compress(parsl_log)
    (folder / "000" / "cut.log.gz").write_bytes(packed_log[: len(packed_log) // 2])  # a copy cut short
    with taskscope.open(":memory:") as store:
        report = store.ingest(folder)
        notes = " | ".join(report.notes)
        assert "cut.zip: cannot be read as a zip archive" in notes
        assert "000/cut.log.gz: read stopped at line" in notes
        assert report.files_unreadable >= 1 and report.events > 1000
        # gzip gives the 40 bytes' start of the tar as content: no format taskscope knows
        assert "unknown format" in store.sql("SELECT note FROM ingested_files WHERE file = 'cut.tar.gz'").note[0]
        kept = store.sql("SELECT count(*) AS n FROM events WHERE file = '000/cut.log.gz'").n[0]
        assert 0 < kept < parsl_log.count(b"\n")


@pytest.mark.parametrize("packing", ["tar", "tar.gz"])
def test_a_truncated_tar_gives_the_files_before_the_cut(tmp_path, packing):
    """A tarball cut short (a download that stopped): its files before the cut are read whole,
    the file the cut went through up to the cut, and the archive's note says it is damaged."""
    run = corpus_path("parsl-2025-textlog")
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as packed:
        for path in sorted(p for p in run.rglob("*") if p.is_file()):
            packed.add(path, arcname=str(path.relative_to(run)))
    content = whole.read_bytes()
    with tarfile.open(whole) as packed:
        members = [m for m in packed.getmembers() if m.isreg()]
    cut_in = max(members, key=lambda m: m.size)  # cut through the biggest file (parsl.log), a third in
    cut_at = cut_in.offset_data + cut_in.size // 3
    archive = tmp_path / f"cut.{packing}"
    archive.write_bytes(content[:cut_at] if packing == "tar" else gzip.compress(content)[: len(gzip.compress(content[:cut_at]))])
    before = {m.name for m in members if m.offset_data + m.size <= cut_at and m.offset_data < cut_in.offset_data}
    assert len(before) >= 3
    from_folder = events_of(run)
    with taskscope.open(":memory:") as store:
        report = store.ingest(archive)
        events = store.sql(f"SELECT file, {COMPARED} FROM events ORDER BY file, line")
        notes = " | ".join(report.notes)
    events["file"] = events.file.str.slice(len(f"{archive.name}!"))
    assert f"{archive.name}: archive of" in notes and "damaged" in notes
    own = ["file", "line", "ts", "level", "logger", "message", "attrs"]  # the rest is related across files
    for name in before:  # every file before the cut, whole
        expected = from_folder.loc[from_folder.file == name, own].reset_index(drop=True)
        got = events.loc[events.file == name, own].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    cut_lines = events[events.file == cut_in.name]
    kept = (run / cut_in.name).read_bytes()[: cut_at - cut_in.offset_data]
    assert 0 < len(cut_lines) and cut_lines.line.max() <= kept.count(b"\n") + 1
    assert cut_lines.line.max() >= kept.count(b"\n") - 50  # gzip holds back at most a block


def test_links_in_a_tar_are_read_as_their_files_and_others_listed(tmp_path):
    """GNU tar stores a file's second hard link as a link entry: both names are read. A link to
    something outside the archive, or a device, is listed with a note, not dropped unsaid."""
    log = corpus_path("parsl-2025-textlog") / "000" / "htex_old" / "interchange.log"
    folder = tmp_path / "hl"
    (folder / "run1").mkdir(parents=True)
    (folder / "run2").mkdir()
    shutil.copy(log, folder / "run1" / "interchange.log")
    os.link(folder / "run1" / "interchange.log", folder / "run2" / "interchange.log")
    (folder / "run2" / "outside.log").symlink_to("/etc/hostname")
    archive = tmp_path / "hl.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(folder, arcname="hl")
    with tarfile.open(archive) as packed:
        assert packed.getmember("hl/run2/interchange.log").islnk()  # as tar stores it
    with taskscope.open(":memory:") as store:
        report = store.ingest(archive)
        counts = dict(store.sql("SELECT file, count(*) AS n FROM events GROUP BY file").values)
        notes = dict(store.sql("SELECT file, note FROM ingested_files WHERE source IS NULL").values)
    lines = log.read_bytes().count(b"\n")
    assert counts == {"hl.tar.gz!hl/run1/interchange.log": lines, "hl.tar.gz!hl/run2/interchange.log": lines}
    assert "which is not in the archive" in notes["hl.tar.gz!hl/run2/outside.log"]
    assert any("outside.log" in note for note in report.notes)
    assert report.files_skipped == 1  # the link: the archive itself is no file skipped, its files were read


def test_a_copy_or_an_archive_of_a_run_read_before_is_not_stored_twice(tmp_path):
    """The same run folder ingested again as a tarball or a copy (in the same ingest or a later
    one) once stored every event twice, and the run's figures counted them twice (a utilisation of
    190 %). Each file with the bytes of one read before is said and not read; a copy that then
    grows has what it gains read."""
    run = tmp_path / "runinfo"
    shutil.copytree(corpus_path("parsl-mixed-textlog"), run)
    archive = pack(run, tmp_path / "runinfo.tar.gz")
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    alone = events_of(run)
    with taskscope.open(str(tmp_path / "s.duckdb")) as store:
        store.ingest(run)
        later = store.ingest(archive)
        both = store.ingest(copy)
        again = store.ingest(run, archive, copy)
        events = store.sql("SELECT count(*) AS n FROM events").n.iloc[0]
        log = copy / "000" / "parsl.log"
        before = log.stat().st_size
        with log.open("a") as appended:  # the copy goes on: it is its own file from here
            appended.write(log.read_text().splitlines(keepends=True)[-1])
        grown = store.ingest(copy)
        gained = store.sql("SELECT count(*) AS n FROM events WHERE file = '000/parsl.log' AND file_id = "
                           "(SELECT file_id FROM ingested_files WHERE path = ?)", [str(log)]).n.iloc[0]
    files = sum(1 for path in run.rglob("*") if path.name.endswith((".log", ".db")))
    assert events == len(alone)
    for report in (later, both):
        assert report.events == 0 and report.files_read == 0
        copied = [note for note in report.notes if "the same bytes as" in note]
        assert len(copied) == files and all("not read again" in note for note in copied), report.notes
    assert again.files_read == 0 and again.notes == []  # said once
    assert log.stat().st_size > before and grown.files_read == 1 and gained == grown.events == 1
