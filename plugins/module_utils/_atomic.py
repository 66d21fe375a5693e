# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic replacement of a file: the old content or the new, never a torn one.

Private to skm.modsign. New content goes to a temporary file in the same
directory, is flushed to disk, gets the original's mode, owner and SELinux
label, and is renamed over the original; then the directory is flushed.

Temporary files are named ``.<name>.<8 random [a-z0-9_]>.~skm~`` beside
``<name>`` and are ``flock``-ed by the process writing them from the moment
they exist until they are renamed or removed. A run killed with SIGKILL
leaves its temporary files behind (the old modules are intact);
``remove_stale_temps`` deletes them on a later run under this rule: the name
matches that pattern exactly, it is a regular file last modified at least
``STALE_AGE`` seconds before the current run started, and no live process
holds its lock (the kernel drops a lock when its holder dies). So a
concurrent run's temporary files are never touched: they are locked, and a
file so new that its creator may not have locked it yet is too young.

Speed (thousands of modules): ``AtomicBatch`` writes a batch of temporary
files, makes them durable with one ``syncfs`` per filesystem, then renames.
Replacing a file frees the old one's blocks, which can block for a
millisecond (e.g. with online discard); the caller may hand in the original's
open descriptor so that the rename is quick and the freeing happens when a
background thread closes it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import fcntl
import os
import queue
import re
import stat
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

_SELINUX_XATTR = "security.selinux"
TEMP_SUFFIX = ".~skm~"
_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
TEMP_NAME = re.compile(r"\A\..+\.[a-z0-9_]{8}\.~skm~\Z", re.DOTALL)
STALE_AGE = 1.0   # seconds before the run started; see the module docstring
CLOSE_QUEUE = 256  # descriptors waiting for a background close, at most (per process)

Chunks = Union[bytes, bytearray, memoryview, Sequence[Union[bytes, bytearray, memoryview]]]


def is_temp_name(name):
    # type: (str) -> bool
    """Whether a file name is one of our temporary files' (``.<name>.<random>.~skm~``)."""
    return TEMP_NAME.match(name) is not None


def _copy_selinux_label(src, dst_fd):
    # type: (Union[str, int], int) -> None
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return
    try:
        label = getxattr(src, _SELINUX_XATTR)
    except OSError:
        return  # no label (no SELinux, or a filesystem without xattrs)
    try:
        os.setxattr(dst_fd, _SELINUX_XATTR, label)
    except OSError:
        pass


def describe_os_error(exc):
    # type: (OSError) -> str
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EROFS:
        return "read-only filesystem"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _write_error(exc, path):
    # type: (OSError, str) -> ModSignError
    return ModSignError("cannot write (%s)" % describe_os_error(exc), path)


def _create_temp(path):
    # type: (str) -> Tuple[int, str]
    """A new, empty, locked temporary file beside ``path``: (fd, its path)."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _attempt in range(100):
        name = "".join(_TEMP_CHARS[b % len(_TEMP_CHARS)] for b in bytearray(os.urandom(8)))
        tmp = os.path.join(directory, ".%s.%s%s" % (base, name, TEMP_SUFFIX))
        try:
            fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)   # "in use" for remove_stale_temps, until renamed or removed
        except OSError:
            pass  # a filesystem without locks: the age rule still protects it
        return fd, tmp
    raise OSError(errno.EEXIST, "no free temporary file name beside %s" % path)


def write_all(fd, data):
    # type: (int, Chunks) -> None
    chunks = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


def _write_temp(path, data, mode=None, like=None, ref_fd=None):
    # type: (str, Chunks, Optional[int], Optional[str], Optional[int]) -> Tuple[int, str]
    """Write ``data`` to a new temporary file beside ``path`` with the right mode, owner and label.

    Returns its (still open and locked) descriptor and path. The reference for
    mode, owner and label is ``like``, else ``ref_fd`` (an open descriptor of
    ``path``), else ``path`` when it exists.
    """
    if like is not None:
        reference = like  # type: Optional[Union[str, int]]
    elif ref_fd is not None:
        reference = ref_fd
    else:
        reference = path if os.path.lexists(path) else None
    fd, tmp = _create_temp(path)
    try:
        write_all(fd, data)
        if reference is not None:
            st = os.fstat(reference) if isinstance(reference, int) else os.stat(reference)
            os.fchmod(fd, st.st_mode & 0o7777 if mode is None else mode)
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                os.fchown(fd, st.st_uid, st.st_gid)
            _copy_selinux_label(reference, fd)
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
    return fd, tmp


def _unlink_quietly(path):
    # type: (str) -> None
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_path(path):
    # type: (str) -> None
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_LIBC = None


def _syncfs(fd):
    # type: (int) -> bool
    """syncfs(2) on the filesystem holding ``fd``: one flush for a whole batch. False if unavailable."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
            _LIBC.syncfs  # noqa: B018 - probe that the symbol exists
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    if _LIBC.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def _flush_fds(fds):
    # type: (Sequence[int]) -> None
    """Make the data of the open files ``fds`` durable: one syncfs per filesystem, or an fsync each."""
    if len(fds) < 4:  # syncfs flushes the whole filesystem: worth it only for a batch
        for fd in fds:
            os.fsync(fd)
        return
    by_device = {}  # type: Dict[int, int]
    for fd in fds:
        by_device.setdefault(os.fstat(fd).st_dev, fd)
    for fd in by_device.values():
        if not _syncfs(fd):
            for each in fds:
                os.fsync(each)
            return


def flush_directories(directories):
    # type: (Iterable[str]) -> None
    """Make renames in ``directories`` durable: one syncfs per filesystem for many, else an fsync each.

    A directory that cannot be flushed (some FUSE) is not an error: the renames are done.
    """
    by_device = {}  # type: Dict[int, List[str]]
    for directory in set(directories):
        try:
            by_device.setdefault(os.stat(directory).st_dev, []).append(directory)
        except OSError:
            pass
    for group in by_device.values():
        try:
            if len(group) >= 4:
                fd = os.open(group[0], os.O_RDONLY)
                try:
                    if _syncfs(fd):
                        continue
                finally:
                    os.close(fd)
            for directory in group:
                fsync_path(directory)
        except OSError:
            pass


class _Closer:
    """Closes descriptors on background threads, so that freeing a replaced file's blocks does not block."""

    THREADS = 4

    def __init__(self):
        # type: () -> None
        self.pid = os.getpid()
        self._queue = queue.Queue(CLOSE_QUEUE)   # bounded: at most this many descriptors wait
        self._threads = []  # type: List[threading.Thread]

    def _run(self):
        # type: () -> None
        while True:
            fd = self._queue.get()
            if fd is None:
                return
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self, fd):
        # type: (int) -> None
        if not self._threads:
            for _index in range(self.THREADS):
                thread = threading.Thread(target=self._run, name="skm-close")
                thread.daemon = True
                thread.start()
                self._threads.append(thread)
        self._queue.put(fd)

    def finish(self):
        # type: () -> None
        for _thread in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []


_CLOSER = None  # type: Optional[_Closer]


def close_later(fd):
    # type: (int) -> None
    """Close ``fd`` on a background thread of this process (see ``finish_closes``)."""
    global _CLOSER
    if _CLOSER is None or _CLOSER.pid != os.getpid():   # a forked child starts its own threads
        _CLOSER = _Closer()
    _CLOSER.close(fd)


def finish_closes():
    # type: () -> None
    """Wait until every ``close_later`` descriptor of this process is closed; no thread is left running."""
    if _CLOSER is not None and _CLOSER.pid == os.getpid():
        _CLOSER.finish()


class AtomicBatch:
    """Replace many files atomically, with one durability flush for the whole batch.

    ``add`` writes a temporary file at once (so the caller may reuse its
    buffer); ``commit`` flushes the filesystems once (syncfs; per-file fsync
    where syncfs is missing), renames each temporary file over its target and,
    when ``durable``, flushes the directories. A crash at any instant leaves
    each file old or new. With ``durable=False`` the caller flushes
    ``directories`` itself (see ``flush_directories``), e.g. once after many batches.
    """

    def __init__(self, mode=None, like=None, durable=True):
        # type: (Optional[int], Optional[str], bool) -> None
        self.mode = mode
        self.like = like
        self.durable = durable
        self.errors = {}  # type: Dict[str, ModSignError]
        self.directories = set()  # type: Set[str]
        self.written = {}  # type: Dict[str, os.stat_result]   # each replaced file, as the rename left it
        self._pending = []  # type: List[Tuple[str, str, int, Optional[int]]]

    def add(self, path, data, hold=None):
        # type: (str, Chunks, Optional[int]) -> Optional[ModSignError]
        """Write the new content of ``path``; returns the error, if any.

        ``hold``: an open descriptor of the current ``path``, used as the
        reference for mode, owner and label and closed in the background after
        the rename. The batch owns it from now on, whatever happens.
        """
        try:
            fd, tmp = _write_temp(path, data, self.mode, self.like, hold)
        except OSError as exc:
            if hold is not None:
                os.close(hold)
            self.errors[path] = _write_error(exc, path)
            return self.errors[path]
        self._pending.append((path, tmp, fd, hold))
        return None

    def _drop(self, error):
        # type: (Optional[OSError]) -> None
        for path, tmp, fd, hold in self._pending:
            os.close(fd)
            _unlink_quietly(tmp)
            if hold is not None:
                os.close(hold)
            if error is not None:
                self.errors[path] = _write_error(error, path)
        self._pending = []

    def commit(self):
        # type: () -> Dict[str, ModSignError]
        """Flush, rename and return the failures by path (the other files are replaced)."""
        pending, directories = self._pending, set()
        try:
            _flush_fds([fd for _path, _tmp, fd, _hold in pending])
        except OSError as exc:
            self._drop(exc)
            return self.errors
        self._pending = []
        for path, tmp, fd, hold in pending:
            try:
                os.rename(tmp, path)
                self.written[path] = os.fstat(fd)
                directories.add(os.path.dirname(os.path.abspath(path)))
            except OSError as exc:
                _unlink_quietly(tmp)
                self.errors[path] = _write_error(exc, path)
            os.close(fd)   # after the rename: the lock marked the temporary file as in use until now
            if hold is not None:
                close_later(hold)
        if self.durable:
            for directory in directories:
                try:
                    fsync_path(directory)
                except OSError:
                    pass  # the renames are done; a directory that cannot be fsynced (some FUSE) is not an error
        self.directories.update(directories)
        return self.errors

    def abort(self):
        # type: () -> None
        """Remove every temporary file written so far; nothing is replaced."""
        self._drop(None)


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
    # type: (Sequence[Tuple[str, Chunks]], Optional[int], Optional[str]) -> Dict[str, ModSignError]
    """Replace many files atomically, with one durability flush for the whole batch (see ``AtomicBatch``).

    Returns the failures by path; the other files are written.
    """
    batch = AtomicBatch(mode, like)
    for path, data in items:
        batch.add(path, data)
    return batch.commit()


def remove_stale_temps(candidates, started, dry_run=False):
    # type: (Iterable[str], float, bool) -> int
    """Delete the temporary files a killed run left among ``candidates``; returns how many.

    The rule (see the module docstring): the name matches ours exactly, it is a
    regular file last modified ``STALE_AGE`` seconds or more before ``started``
    (this run's start, ``time.time()``), and no live process holds its lock.
    ``dry_run`` counts without deleting (check mode).
    """
    removed = 0
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    for tmp in candidates:
        if not is_temp_name(os.path.basename(tmp)):
            continue
        try:
            st = os.lstat(tmp)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_mtime > started - STALE_AGE:
            continue
        try:
            fd = os.open(tmp, flags)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # fails while its writer is alive
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                continue
            if not dry_run:
                os.unlink(tmp)
            removed += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed
