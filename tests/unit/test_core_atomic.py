"""Stale temporary files: which ones a later run removes (_atomic.remove_stale_temps) and which it must not.

Locks are held by util-linux's flock(1) in another process, the oracle for "a live process uses it";
the directory listing is the oracle for what was removed.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _atomic as atomic

OLD = 3600.0


def make(directory: pathlib.Path, name: str, age: float = OLD) -> pathlib.Path:
    path = directory / name
    path.write_bytes(b"partial module")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def names(directory: pathlib.Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_only_old_unlocked_files_named_like_ours_are_removed(tmp_path):
    stale = make(tmp_path, ".e1000e.ko.a1b2c3d_.~skm~")
    young = make(tmp_path, ".igb.ko.zz99zz99.~skm~", age=0)
    others = [make(tmp_path, name) for name in (
        ".e1000e.ko.abc.~skm~",              # not 8 random characters
        "e1000e.ko.a1b2c3d4.~skm~",          # no leading dot
        ".e1000e.ko.a1b2c3d4.~skm~.bak",     # something else's name
        ".e1000e.ko.A1B2C3D4.~skm~",         # not our alphabet
        "e1000e.ko",
    )]
    (tmp_path / ".link.ko.abcdefgh.~skm~").symlink_to(others[-1])
    candidates = [str(p) for p in tmp_path.iterdir()]
    before = names(tmp_path)

    assert atomic.remove_stale_temps(candidates, time.time(), dry_run=True) == 1
    assert names(tmp_path) == before, "check mode removed something"
    assert atomic.remove_stale_temps(candidates, time.time()) == 1
    assert names(tmp_path) == sorted(set(before) - {stale.name})
    assert young.exists()


def test_a_file_locked_by_a_live_process_is_kept_until_that_process_dies(tmp_path):
    temp = make(tmp_path, ".m.ko.abcdefgh.~skm~")
    holder = subprocess.Popen(["flock", "--exclusive", str(temp), "sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # wait until flock(1) holds it
            if subprocess.run(["flock", "--nonblock", "--exclusive", str(temp), "true"], check=False).returncode != 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("flock(1) never took the lock")
        assert atomic.remove_stale_temps([str(temp)], time.time()) == 0
        assert temp.exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)   # flock(1) and its sleep, which shares the locked descriptor
        holder.wait()
    removed, deadline = 0, time.monotonic() + 10
    while not removed and time.monotonic() < deadline:   # the orphaned sleep takes a moment to die
        removed = atomic.remove_stale_temps([str(temp)], time.time())
        time.sleep(0.05)
    assert removed == 1
    assert not temp.exists()


def test_a_concurrent_batch_keeps_its_temporary_files(tmp_path):
    """Another run writing right now (here: this process, through its own AtomicBatch) is never disturbed."""
    target = tmp_path / "m.ko"
    target.write_bytes(b"old")
    batch = atomic.AtomicBatch()
    assert batch.add(str(target), b"new") is None
    (temp,) = [p for p in tmp_path.iterdir() if p.name != "m.ko"]
    assert atomic.is_temp_name(temp.name)
    stamp = time.time() - OLD
    os.utime(temp, (stamp, stamp))        # even when it looks old, its lock says it is in use
    assert atomic.remove_stale_temps([str(temp)], time.time()) == 0
    assert batch.commit() == {}
    assert target.read_bytes() == b"new"
    assert names(tmp_path) == ["m.ko"]
