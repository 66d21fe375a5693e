# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic replacement of a file: the old content or the new, never a torn one.

Private to skm.modsign. New content goes to a temporary file in the same
directory, is fsynced, gets the original's mode, owner and SELinux label,
and is renamed over the original; then the directory is fsynced.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

_SELINUX_XATTR = "security.selinux"


def _copy_selinux_label(src, dst):
    # type: (str, str) -> None
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return
    try:
        label = getxattr(src, _SELINUX_XATTR)
    except OSError:
        return  # no label (no SELinux, or a filesystem without xattrs)
    try:
        os.setxattr(dst, _SELINUX_XATTR, label)
    except OSError:
        pass


def _describe(exc):
    # type: (OSError) -> str
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EROFS:
        return "read-only filesystem"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _write_temp(path, data, mode=None, like=None):
    # type: (str, Union[bytes, Sequence[bytes]], Optional[int], Optional[str]) -> str
    """Write ``data`` (bytes, or a sequence of chunks) to a new temporary file beside ``path`` with the right mode, owner and label."""
    directory = os.path.dirname(os.path.abspath(path))
    reference = like if like is not None else (path if os.path.lexists(path) else None)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".~skm~", dir=directory)
    try:
        for chunk in ((data,) if isinstance(data, (bytes, bytearray, memoryview)) else data):
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        if reference is not None:
            st = os.stat(reference)
            os.fchmod(fd, st.st_mode & 0o7777 if mode is None else mode)
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                os.fchown(fd, st.st_uid, st.st_gid)
        elif mode is not None:
            os.fchmod(fd, mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
    except OSError:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    if reference is not None:
        _copy_selinux_label(reference, tmp)
    return tmp


def _unlink_quietly(path):
    # type: (str) -> None
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_path(path):
    # type: (str) -> None
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_LIBC = None


def _syncfs(path):
    # type: (str) -> bool
    """syncfs(2) on the filesystem holding ``path``: one flush for a whole batch. False if unavailable."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
            _LIBC.syncfs  # noqa: B018 - probe that the symbol exists
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    return True


def _flush(paths):
    # type: (List[str]) -> None
    """Make the data of ``paths`` durable: one syncfs per filesystem, or an fsync each."""
    if len(paths) < 4:  # syncfs flushes the whole filesystem: worth it only for a batch
        for each in paths:
            _fsync_path(each)
        return
    by_device = {}  # type: Dict[int, str]
    for path in paths:
        by_device.setdefault(os.stat(path).st_dev, path)
    for path in by_device.values():
        if not _syncfs(path):
            for each in paths:
                _fsync_path(each)
            return


def atomic_write(path, data, mode=None, like=None):
    # type: (str, bytes, Optional[int], Optional[str]) -> None
    """Replace (or create) ``path`` with ``data`` atomically.

    Mode, owner and SELinux label come from ``like`` (default: ``path`` itself
    when it exists); ``mode`` overrides the mode.
    """
    errors = atomic_write_many([(path, data)], mode=mode, like=like)
    if errors:
        raise errors[path]


def atomic_write_many(items, mode=None, like=None):
    # type: (Sequence[Tuple[str, Union[bytes, Sequence[bytes]]]], Optional[int], Optional[str]) -> Dict[str, ModSignError]
    """Replace many files atomically, with one durability flush for the whole batch.

    Every temporary file is written, then the filesystems are flushed once
    (syncfs; per-file fsync where syncfs is missing), then each temporary file
    is renamed over its target and the directories are flushed. A crash at any
    instant leaves each file old or new. Returns the failures by path; the
    other files are written.
    """
    errors = {}  # type: Dict[str, ModSignError]
    written = []  # type: List[Tuple[str, str]]
    for path, data in items:
        try:
            written.append((path, _write_temp(path, data, mode, like)))
        except OSError as exc:
            errors[path] = ModSignError("cannot write (%s)" % _describe(exc), path)
    try:
        _flush([tmp for _path, tmp in written])
    except OSError as exc:
        for path, tmp in written:
            _unlink_quietly(tmp)
            errors[path] = ModSignError("cannot write (%s)" % _describe(exc), path)
        return errors
    directories = set()
    for path, tmp in written:
        try:
            os.rename(tmp, path)
            directories.add(os.path.dirname(os.path.abspath(path)))
        except OSError as exc:
            _unlink_quietly(tmp)
            errors[path] = ModSignError("cannot write (%s)" % _describe(exc), path)
    for directory in directories:
        try:
            _fsync_path(directory)
        except OSError:
            pass  # the renames are done; a directory that cannot be fsynced (some FUSE) is not an error
    return errors
