"""What the benchmarks share: the collection on sys.path, timers, the hash used with each key kind."""

from __future__ import annotations

import os
import pathlib
import resource
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
for _path in (REPO / "build" / "collections", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# The hash each key kind signs with in the benchmarks (ECDSA wants a hash at least as long as the curve).
HASH_FOR = {"rsa4096": "sha512", "p384": "sha384", "rsa2048": "sha256", "p256": "sha256"}


def timed(func):
    """(seconds, result) of calling ``func``."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have been waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_LAST_CHURN = [0.0]
RECENTLY_DELETED = 61.0   # ext4 (ialloc.c recently_deleted) will not reuse an inode freed less than 60 s ago


def churned() -> None:
    """Note that a step just replaced or deleted many files."""
    _LAST_CHURN[0] = time.monotonic()


def settle() -> None:
    """Wait until the last step that freed many inodes is RECENTLY_DELETED seconds ago.

    ext4 skips inodes freed less than 60 s ago when it allocates one, scanning past each of them:
    right after a step freed 4000 inodes, creating files costs measurably more CPU. Each timed
    step that creates files starts without that handicap from the previous step.
    """
    wait = _LAST_CHURN[0] + RECENTLY_DELETED - time.monotonic()
    if _LAST_CHURN[0] and wait > 0:
        time.sleep(wait)


def warm(files) -> None:
    """Bring a tree into the page cache: its directories' blocks (readdir) and every file's bytes.

    This VM pages out page cache idle for about 30 s (DAMON, action pageout), so a tree made before a
    60 s ``settle`` would otherwise be read from disk. A timed step starts warm, as signing right after
    a build or an install does (the benchmarks time one cold read of the tree and print it beside).
    """
    for directory in sorted({os.path.dirname(str(f)) for f in files}):
        os.listdir(directory)
    for path in files:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


class Step:
    """Wall and CPU seconds of calling ``func`` after a ``sync`` (earlier steps' dirty pages are not charged to it).

    The CPU seconds include forked workers and child processes (ansible-playbook and its module);
    on a machine shared with other jobs they vary far less than the wall time.
    """

    def __init__(self, func):
        os.sync()
        cpu = cpu_seconds()
        self.seconds, self.result = timed(func)
        self.cpu = cpu_seconds() - cpu

    def __str__(self) -> str:
        return f"{self.seconds:.2f} s (cpu {self.cpu:.2f} s)"


def load() -> str:
    """The load average, to print beside numbers measured on a shared machine."""
    return "load average %.1f %.1f %.1f" % os.getloadavg()
