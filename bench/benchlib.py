"""What the benchmarks share: the collection on sys.path, a timer, the hash used with each key kind."""

from __future__ import annotations

import pathlib
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
