# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""skm_sign's per-host memory of the modules already signed with a certificate and hash.

Private to skm.modsign. A re-run over an already signed tree reads, hashes and
verifies every module (about 400 MB for a distribution kernel). With this cache a
module whose file is provably unchanged (see _cache_file: device, inode, size,
mtime and ctime in ns) since it was verified, or since skm_sign wrote it, is
answered "already signed" without being read.

What is kept, by file identity: the certificate's SHA-256 fingerprint and the hash
of a valid signature; foreign, unsigned and failed modules are never kept. A
verified module is recorded with the stat taken before it was read; a written one
with the stat of the new file taken right after its rename.

Its own file (``signed.json``): the gate and the audit never read it. An entry made
at write time records what skm_sign wrote, not a verification, so it must never
make the gate trust a module.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from typing import Dict, List, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils import _cache_file as cache_file
from ansible_collections.skm.modsign.plugins.module_utils._signing import (
    ALREADY_SIGNED, REPLACED, SIGNED, Outcome,
)

FORMAT = 1
CACHE_FILE = "signed.json"


class SignedCache:
    """The modules known to be signed by one certificate (``fingerprint``) with one hash."""

    def __init__(self, cache_dir, fingerprint, hash_name):
        # type: (str, str, str) -> None
        self.path = os.path.join(cache_dir, CACHE_FILE)
        self.signature = [fingerprint, hash_name]
        self.entries, self.note = cache_file.load(self.path, FORMAT)
        self.hits = 0
        self._before = {}  # type: Dict[str, cache_file.Identity]
        self._learnt = False   # the file is rewritten only when something was learnt

    def split(self, paths):
        # type: (Sequence[str]) -> Tuple[List[str], List[str]]
        """(the paths known to be signed already, the paths that must be read); each path's stat is kept."""
        known, rest = [], []
        for path in paths:
            try:
                key, version = self._before[path] = cache_file.identity(os.stat(path))
            except OSError:
                rest.append(path)     # the signing core says why
                continue
            entry = self.entries.get(key)
            if entry is not None and entry[0] == version and entry[2:] == self.signature:
                known.append(path)
            else:
                rest.append(path)
        self.hits = len(known)
        return known, rest

    def remember_verified(self, path):
        # type: (str) -> None
        """``path`` was read and found validly signed: record it with the stat taken before the read."""
        if path in self._before:
            key, version = self._before[path]
            self._record(key, version, path)

    def remember_written(self, path, st):
        # type: (str, os.stat_result) -> None
        """``path`` was just written with our signature; ``st`` is its stat right after the rename."""
        key, version = cache_file.identity(st)
        self._record(key, version, path)

    def _record(self, key, version, path):
        # type: (str, List[int], str) -> None
        self.entries[key] = [version, path] + self.signature
        self._learnt = True

    def learn(self, outcomes, written):
        # type: (Sequence[Outcome], Dict[str, os.stat_result]) -> None
        """Record the modules of a signing run that are now validly signed (verified, or written)."""
        for outcome in outcomes:
            if outcome.status == ALREADY_SIGNED:
                self.remember_verified(outcome.path)
            elif outcome.status in (SIGNED, REPLACED) and outcome.path in written:
                self.remember_written(outcome.path, written[outcome.path])

    def save(self):
        # type: () -> None
        """Write the cache file when something was learnt; ``note`` says why it could not be written."""
        if self._learnt:
            self.note = cache_file.save(self.path, FORMAT, self.entries) or self.note
            self._learnt = False

    def report(self, total):
        # type: (int) -> Dict[str, object]
        return {"path": self.path, "hits": self.hits, "misses": total - self.hits, "note": self.note}
