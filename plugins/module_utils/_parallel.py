# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a per-file function over many files on every core.

Private to skm.modsign. Workers are forked, so state the parent loaded once
(a private key, certificates) is inherited, never pickled or sent anywhere.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import multiprocessing
import os
from typing import Callable, List, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_TASK = None  # the function workers run, set before the fork


def _call(item):
    return _TASK(item)  # type: ignore[misc]


def default_workers():
    # type: () -> int
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def map_files(func, items, workers=0, chunksize=0):
    # type: (Callable[[T], R], Sequence[T], int, int) -> List[R]
    """``[func(i) for i in items]`` in order, using ``workers`` processes (0: all cores).

    ``chunksize``: items a worker takes at a time (0: a few per worker; 1 for
    items that are already batches, so that no worker is left with a long tail).
    """
    global _TASK
    workers = workers or default_workers()
    workers = min(workers, len(items))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [func(item) for item in items]
    _TASK = func
    try:
        chunksize = chunksize or max(1, min(64, len(items) // (workers * 8)))
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_call, items, chunksize)
    finally:
        _TASK = None
