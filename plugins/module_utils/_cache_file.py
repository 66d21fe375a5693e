# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A per-host JSON cache of what was learnt of files, keyed by the files' identity.

Private to skm.modsign (the verdict cache of the gate and the audit, and skm_sign's
cache of the modules it signed). An entry stands for a file while that file is
provably the same file with the same content: same device and inode, and the same
size, mtime and ctime in ns. Any write changes a file's ctime, which no user-space
call can set back, and a file replaced by rename has a new inode.

A cache file is used only when it belongs to the user running and nobody else can
write it; otherwise it is ignored (and replaced when written).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.skm.modsign.plugins.module_utils._atomic import atomic_write
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

Identity = Tuple[str, List[int]]


def identity(st):
    # type: (os.stat_result) -> Identity
    """The cache's key for a file (device and inode: symlinks and hard links share it) and its version."""
    return "%d:%d" % (st.st_dev, st.st_ino), [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def load(cache_path, file_format):
    # type: (str, int) -> Tuple[Dict[str, Any], Optional[str]]
    """A cache file's entries, or none and why they were not used (a missing file is no reason)."""
    try:
        fd = os.open(cache_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return {}, None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return {}, "%s ignored: owned by another user or writable by others" % cache_path
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        return {}, "%s ignored: %s" % (cache_path, exc)
    finally:
        if fd >= 0:
            os.close(fd)
    if not isinstance(data, dict) or data.get("format") != file_format or not isinstance(data.get("entries"), dict):
        return {}, "%s ignored: not a cache of format %d" % (cache_path, file_format)
    return data["entries"], None


def save(cache_path, file_format, entries):
    # type: (str, int, Dict[str, Any]) -> Optional[str]
    """Write the cache file (mode 0600, atomically), making its directory (0700) if need be.

    Entries whose file is gone are dropped first. Returns why it could not be written, or None:
    a cache that cannot be kept costs time, not correctness.
    """
    forget_gone(entries)
    try:
        cache_dir = os.path.dirname(cache_path)
        if not os.path.isdir(cache_dir):
            os.makedirs(cache_dir, 0o700)
        data = json.dumps({"format": file_format, "entries": entries}, separators=(",", ":"), sort_keys=True)
        atomic_write(cache_path, data.encode("utf-8"), mode=0o600)
    except (ModSignError, OSError) as exc:
        return "%s not written: %s" % (cache_path, getattr(exc, "cause", None) or exc)
    return None


def forget_gone(entries):
    # type: (Dict[str, Any]) -> None
    """Drop entries (``[version, path, ...]``) whose file is gone from where it was last seen."""
    for key, entry in list(entries.items()):
        try:
            if identity(os.stat(entry[1]))[0] == key:
                continue
        except OSError:
            pass
        del entries[key]
