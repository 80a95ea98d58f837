"""spc_fast.imagefiles, publishing: a file is never replaced without overwrite, also when another writer creates it
meanwhile (exactly one of racing writers wins), temporaries are removed on every failure or interruption (Ctrl-C, a
SIGTERM handler's SystemExit), and a killed run's temporaries are removed by ``remove_stale_temporaries``."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from imagefile_cases import random_rgb, temporaries

from spc_fast.imagefiles import ImageError, atomic, atomic_write, load_image, remove_stale_temporaries, save_image

EXISTS = r"out\.png: already exists; pass --overwrite to replace it, or --skip-existing to keep it"
OURS = re.compile(r"\.(?P<target>.+)\.spc-fast-(?P<pid>\d+)-[0-9a-f]{8}\.tmp")


def _writer(data: bytes, during=None):
    def write(file):
        file.write(data)
        if during is not None:
            during(file)

    return write


def test_temporary_is_named_after_the_target_and_this_process(tmp_path):
    seen = []
    atomic_write(tmp_path / "out.png", _writer(b"x", lambda file: seen.extend(temporaries(tmp_path))))
    match = OURS.fullmatch(seen[0])
    assert len(seen) == 1 and match and match["target"] == "out.png" and int(match["pid"]) == os.getpid()
    assert temporaries(tmp_path) == [] and (tmp_path / "out.png").read_bytes() == b"x"


def test_target_created_while_writing_is_not_replaced(tmp_path):
    target = tmp_path / "out.png"

    def another_run(file):
        target.write_bytes(b"the other run's photo")

    with pytest.raises(ImageError, match=EXISTS):
        atomic_write(target, _writer(b"ours", another_run))
    assert target.read_bytes() == b"the other run's photo" and temporaries(tmp_path) == []
    atomic_write(target, _writer(b"ours"), overwrite=True)
    assert target.read_bytes() == b"ours"


def test_dangling_symlink_at_the_target_is_not_followed_or_replaced(tmp_path):
    (tmp_path / "out.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(ImageError, match="already exists"):
        atomic_write(tmp_path / "out.png", _writer(b"ours"))
    assert not (tmp_path / "elsewhere.png").exists() and (tmp_path / "out.png").is_symlink()


def test_exactly_one_of_racing_writers_wins(tmp_path):
    target, writers = tmp_path / "out.png", 6
    all_encoded = threading.Barrier(writers)  # every writer has passed the existence check and holds a temporary
    outcomes: dict[int, str] = {}

    def run(index: int) -> None:
        try:
            atomic_write(target, _writer(bytes([index]) * 100, lambda file: all_encoded.wait(10)))
            outcomes[index] = "written"
        except ImageError as error:
            outcomes[index] = str(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, outcome in outcomes.items() if outcome == "written"]
    assert len(winners) == 1, outcomes
    assert all("already exists" in outcomes[i] for i in outcomes if i not in winners)
    assert target.read_bytes() == bytes(winners) * 100 and temporaries(tmp_path) == []


def test_racing_save_image_calls_leave_one_complete_image(tmp_path, monkeypatch):
    target, images = tmp_path / "out.png", [random_rgb(), 255 - random_rgb()]
    both_checked = threading.Barrier(2)
    real_fsync = atomic.os.fsync

    def fsync_after_both(fd):  # both temporaries are written before either is published
        both_checked.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync_after_both)
    errors = []

    def run(index):
        try:
            save_image(target, images[index])
        except ImageError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 1 and "already exists" in errors[0]
    assert any((load_image(target) == image).all() for image in images) and temporaries(tmp_path) == []


def test_file_system_without_hard_links_publishes_without_replacing(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)
    atomic_write(tmp_path / "out.png", _writer(b"first"))
    with pytest.raises(ImageError, match="already exists"):
        atomic_write(tmp_path / "out.png", _writer(b"second"))
    assert (tmp_path / "out.png").read_bytes() == b"first" and temporaries(tmp_path) == []


def test_file_system_without_any_exclusive_publish_asks_for_overwrite(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)
    monkeypatch.setattr(atomic.ctypes, "CDLL", lambda *args, **kwargs: object())  # a C library without renameat2
    no_exclusive_publish = r"out\.png: this folder's file system cannot create a file without .*--overwrite"
    with pytest.raises(ImageError, match=no_exclusive_publish):
        atomic_write(tmp_path / "out.png", _writer(b"first"))
    assert list(tmp_path.iterdir()) == []
    atomic_write(tmp_path / "out.png", _writer(b"first"), overwrite=True)
    assert (tmp_path / "out.png").read_bytes() == b"first"


# ---- interruptions ------------------------------------------------------------------------------------------


def test_ctrl_c_while_writing_removes_the_temporary(tmp_path):
    def interrupted(file):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out.png", _writer(b"partial", interrupted))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def sigterm_exits():
    """A SIGTERM handler as the command line installs it: SystemExit, unwinding like Ctrl-C."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_while_writing_removes_the_temporary(tmp_path, sigterm_exits):
    def terminated(file):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises SystemExit here

    with pytest.raises(SystemExit):
        atomic_write(tmp_path / "out.png", _writer(b"partial", terminated))
    assert list(tmp_path.iterdir()) == []


def test_sigterm_while_the_temporary_is_created_removes_it(tmp_path, sigterm_exits, monkeypatch):
    real_open = os.open

    def open_then_terminated(path, flags, *args):
        fd = real_open(path, flags, *args)
        os.kill(os.getpid(), signal.SIGTERM)  # unheld, the handler would run before the name is recorded
        return fd

    monkeypatch.setattr(atomic.os, "open", open_then_terminated)
    with pytest.raises(SystemExit):
        atomic_write(tmp_path / "out.png", _writer(b"never written"))
    assert list(tmp_path.iterdir()) == []


# ---- stale temporaries ----------------------------------------------------------------------------------------


def _temporary(folder: Path, target: str, pid: int, age_s: float = 0.0) -> Path:
    path = folder / f".{target}.spc-fast-{pid}-0123abcd.tmp"
    path.write_bytes(b"partial")
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))
    return path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = _temporary(tmp_path, "a.png", _dead_pid())
    live = _temporary(tmp_path, "b.png", os.getpid())  # this process, written after it started: in use
    reused = _temporary(tmp_path, "c.png", os.getpid(), age_s=10 * 86400)  # older than this process: pid reused
    (tmp_path / ".d.png.1234abcd.tmp").write_bytes(b"not our naming")
    (tmp_path / "photo.jpg").write_bytes(b"a photo")
    (tmp_path / f".e.png.spc-fast-{_dead_pid()}-0123abcd.tmp").mkdir()  # a folder: never removed
    (tmp_path / f".f.png.spc-fast-{_dead_pid()}-0123abcd.tmp").symlink_to(tmp_path / "photo.jpg")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([dead, reused])
    assert live.exists() and (tmp_path / "photo.jpg").read_bytes() == b"a photo"
    assert len(list(tmp_path.iterdir())) == 5
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_temporary_of_a_killed_writer_is_removed_on_the_next_run(tmp_path):
    script = (
        "import sys, time\n"
        "from spc_fast.imagefiles import atomic_write\n"
        "def write(file):\n"
        "    file.write(b'partial'); file.flush(); print('writing', flush=True); time.sleep(60)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.png")], stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == b"writing\n"
        writer.kill()  # SIGKILL: nothing runs in the writer any more
        time.sleep(0.2)
        left = temporaries(tmp_path)
        assert len(left) == 1 and OURS.fullmatch(left[0])["pid"] == str(writer.pid)
        assert [p.name for p in remove_stale_temporaries(tmp_path)] == left  # also while still a zombie
    finally:
        writer.kill()
        writer.wait()
    assert list(tmp_path.iterdir()) == []
