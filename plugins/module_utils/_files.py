# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading files with errors that name the file and the cause.

Private to skm.modsign.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
from typing import Optional

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError


def read_bytes(path, what=None):
    # type: (str, Optional[str]) -> bytes
    """The bytes of ``path``; ``what`` names the file in the error ("the kernel image")."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ModSignError("cannot read %s(%s)" % (what + " " if what else "", exc.strerror or exc), path)


def display_path(path):
    # type: (str) -> str
    """``path`` as valid UTF-8 text for a task result: bytes that are not UTF-8 as ``\\xNN`` escapes.

    Ansible refuses a result holding the surrogates Python decodes such bytes to.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_text_if_exists(path):
    # type: (str) -> Optional[str]
    """The text of ``path``, or None when it does not exist."""
    try:
        with open(path, "r") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModSignError("cannot read (%s)" % (getattr(exc, "strerror", None) or exc), path)


# A module, config or image bigger than this is not what it claims to be (the biggest Debian module, amdgpu,
# is about 30 MB uncompressed); reading it whole would end in MemoryError without a name.
MAX_FILE_BYTES = 1 << 30


def open_regular(path, what=None, max_size=MAX_FILE_BYTES):
    # type: (str, Optional[str], int) -> int
    """A read-only descriptor of ``path``, which must be a regular file of at most ``max_size`` bytes.

    O_NONBLOCK keeps a FIFO from blocking the open; the type is checked on the descriptor, so a file
    swapped after a stat cannot slip through. Symbolic links are followed (a module tree may hold them).
    """
    label = what + " " if what else ""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ModSignError("cannot read %s(%s)" % (label, exc.strerror or exc), path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModSignError("not a regular file (%s); only regular files are read" % _file_kind(st.st_mode), path)
        if st.st_size > max_size:
            raise ModSignError("%s%d bytes, more than the %d this reads" % (label, st.st_size, max_size), path)
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path, what=None, max_size=MAX_FILE_BYTES):
    # type: (str, Optional[str], int) -> bytes
    """The bytes of the regular file ``path`` (see ``open_regular``)."""
    fd = open_regular(path, what, max_size)
    chunks = []
    total = 0
    try:
        # Sized by fstat, not by the cap: read(n) allocates n bytes up front.
        want = os.fstat(fd).st_size + 1
        while total <= max_size:
            chunk = os.read(fd, min(want, max_size + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            want = 1 << 20
    except OSError as exc:
        raise ModSignError("cannot read %s(%s)" % (what + " " if what else "", exc.strerror or exc), path)
    finally:
        os.close(fd)
    if total > max_size:
        raise ModSignError("grew past %d bytes while being read" % max_size, path)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _file_kind(mode):
    # type: (int) -> str
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "mode %o" % stat.S_IFMT(mode)


def write_target(path, root_dir="/"):
    # type: (str, str) -> str
    """The file a write to ``path`` must replace: ``path``, or the end of its chain of symbolic links.

    Replacing a link with a regular file would leave its real target (a ``.config`` kept elsewhere,
    ``/etc/default/grub`` managed by a config tool) stale. Absolute link targets are read as the host
    under ``root_dir`` sees them; a chain that leaves ``root_dir``, loops or ends in something other than a
    regular file or nothing is refused.
    """
    root = os.path.realpath(root_dir or "/")
    current = path
    for _hop in range(40):
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            break
        except OSError as exc:
            raise ModSignError("cannot inspect (%s)" % (exc.strerror or exc), current)
        if not stat.S_ISLNK(st.st_mode):
            if not stat.S_ISREG(st.st_mode):
                raise ModSignError("not a regular file (%s); refusing to replace it" % _file_kind(st.st_mode),
                                   current)
            break
        link = os.readlink(current)
        if os.path.isabs(link):
            current = os.path.join(root, link.lstrip("/"))
        else:
            current = os.path.join(os.path.dirname(current), link)
        current = os.path.normpath(current)
    else:
        raise ModSignError("too many levels of symbolic links", path)
    real_dir = os.path.realpath(os.path.dirname(current) or ".")
    if root != "/" and real_dir != root and not real_dir.startswith(root + os.sep):
        raise ModSignError("is a symbolic link to %s, outside %s; refusing to write there" % (current, root), path)
    return os.path.join(real_dir, os.path.basename(current))
