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

import errno
import os
import tempfile
from typing import Optional

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


def atomic_write(path, data, mode=None, like=None):
    # type: (str, bytes, Optional[int], Optional[str]) -> None
    """Replace (or create) ``path`` with ``data`` atomically.

    Mode, owner and SELinux label come from ``like`` (default: ``path`` itself
    when it exists); ``mode`` overrides the mode.
    """
    directory = os.path.dirname(os.path.abspath(path))
    reference = like if like is not None else (path if os.path.lexists(path) else None)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".~skm~", dir=directory)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            if reference is not None:
                st = os.stat(reference)
                os.fchmod(fd, st.st_mode & 0o7777 if mode is None else mode)
                if hasattr(os, "fchown") and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                    os.fchown(fd, st.st_uid, st.st_gid)
            elif mode is not None:
                os.fchmod(fd, mode)
            else:
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(fd, 0o666 & ~umask)
        finally:
            os.close(fd)
        if reference is not None:
            _copy_selinux_label(reference, tmp)
        os.rename(tmp, path)
        tmp = None
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ModSignError("cannot write (%s)" % _describe(exc), path)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
