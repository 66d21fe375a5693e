# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing a key set (several files that are only good together) so that a failure never leaves half of it.

Private to skm.modsign. No Ansible imports, no cryptography needed.

Every file of the set is first written whole into a private staging directory beside its destination
(``.skm-new-XXXX``, 0700, on the same filesystem). A full disk, a quota or a bad owner fails there, and
the staging directory is removed: nothing the user had is touched. Then:

- a new generation (dated layout): the staging directory is renamed to its generation name in one step;
  the caller flips ``current`` only after that;
- a set in place (flat layout, or a repair): the old set is first hard-linked into ``previous/<when>/``
  (no data copied, so it needs no room), then each staged file is renamed over its old name, the metadata
  last. A rename needs no room either; if one still fails, the error lists what was and was not replaced,
  and the old set is whole in ``previous/``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import pwd
import tempfile
from typing import List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils._atomic import describe_os_error, fsync_path, write_all
from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

STAGING_PREFIX = ".skm-new-"
PREVIOUS_DIR = "previous"


class KeyFile(NamedTuple):
    name: str           # file name inside the set's directory
    data: bytes
    mode: int


class SetWriteError(ModSignError):
    """Writing a key set failed; ``written`` were replaced or created, ``not_written`` were not."""

    def __init__(self, cause, path, written, not_written):
        # type: (str, str, List[str], List[str]) -> None
        if written:
            cause = "%s; already replaced: %s; not written: %s" % (cause, ", ".join(written), ", ".join(not_written))
        else:
            cause = "%s; nothing was changed (not written: %s)" % (cause, ", ".join(not_written))
        super(SetWriteError, self).__init__(cause, path)
        self.written = written
        self.not_written = not_written


def resolve_owner(owner, group):
    # type: (Optional[str], Optional[str]) -> Tuple[int, int]
    """(uid, gid) for chown, -1 for "leave as is"; an unknown name fails before anything is written."""
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
    except KeyError:
        raise ModSignError("owner %r is not a user on this host; nothing was written" % owner)
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise ModSignError("group %r is not a group on this host; nothing was written" % group)
    return uid, gid


def _remove_tree(directory):
    # type: (str) -> None
    """Remove a staging or partial directory of plain files (no recursion: we make no subdirectories)."""
    try:
        for entry in os.listdir(directory):
            os.unlink(os.path.join(directory, entry))
        os.rmdir(directory)
    except OSError:
        pass


def _write_file(path, item, uid, gid):
    # type: (str, KeyFile, int, int) -> None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, item.mode)
    try:
        write_all(fd, item.data)
        os.fchmod(fd, item.mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(parent, files, uid=-1, gid=-1, destination=None):
    # type: (str, Sequence[KeyFile], int, int, Optional[str]) -> str
    """Every file of the set, whole, in a new staging directory under ``parent``; its path.

    ``destination`` (default ``parent``) is where the files will end up, for the error's list.
    """
    targets = [os.path.join(destination or parent, f.name) for f in files]
    try:
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent)
    except OSError as exc:
        raise SetWriteError("cannot create a staging directory (%s)" % describe_os_error(exc), parent, [], targets)
    for item in files:
        try:
            _write_file(os.path.join(staging, item.name), item, uid, gid)
        except OSError as exc:
            _remove_tree(staging)
            raise SetWriteError("cannot write %s (%s)" % (item.name, describe_os_error(exc)),
                                os.path.join(destination or parent, item.name), [], targets)
    return staging


def remove_stale_staging(parent):
    # type: (str) -> None
    """Staging directories an interrupted run left behind (they may hold a private key)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        if name.startswith(STAGING_PREFIX) and os.path.isdir(path) and not os.path.islink(path):
            _remove_tree(path)


def ensure_directory(directory):
    # type: (str) -> bool
    """Make ``directory`` (0755) if needed; True when it was made."""
    if os.path.isdir(directory):
        return False
    try:
        os.makedirs(directory, mode=0o755)
    except OSError as exc:
        raise ModSignError("cannot create the directory (%s)" % describe_os_error(exc), directory)
    return True


def keep_previous(directory, names, previous):
    # type: (str, Sequence[str], str) -> Optional[str]
    """Hard-link the existing files ``names`` of ``directory`` into ``previous``; None when there were none."""
    present = [n for n in names if os.path.lexists(os.path.join(directory, n))]
    if not present:
        return None
    try:
        os.makedirs(previous, mode=0o700)
        for name in present:
            os.link(os.path.join(directory, name), os.path.join(previous, name))
    except OSError as exc:
        _remove_tree(previous)
        raise ModSignError("cannot keep the previous key set (%s)" % describe_os_error(exc), previous)
    return previous


def write_in_place(directory, files, uid=-1, gid=-1, previous=None):
    # type: (str, Sequence[KeyFile], int, int, Optional[str]) -> Optional[str]
    """Replace the set in ``directory`` by ``files`` (in their order), keeping the old one in ``previous``.

    Returns the directory the old set was kept in (None: not asked, or nothing was there).
    """
    targets = [os.path.join(directory, f.name) for f in files]
    staging = stage(directory, files, uid, gid)
    kept = None
    try:
        if previous:
            kept = keep_previous(directory, [f.name for f in files], previous)
    except ModSignError as exc:
        _remove_tree(staging)
        raise SetWriteError(exc.cause, exc.path or directory, [], targets)
    written = []  # type: List[str]
    for item, target in zip(files, targets):
        try:
            os.replace(os.path.join(staging, item.name), target)
        except OSError as exc:
            _remove_tree(staging)
            raise SetWriteError("cannot rename the new %s into place (%s)%s"
                                % (item.name, describe_os_error(exc), "; the old set is in %s" % kept if kept else ""),
                                target, written, targets[len(written):])
        written.append(target)
    _remove_tree(staging)
    fsync_path(directory)
    return kept


def write_new_directory(parent, name, files, uid=-1, gid=-1):
    # type: (str, str, Sequence[KeyFile], int, int) -> str
    """A new directory ``parent/name`` holding the whole set, or nothing at all; its path."""
    target = os.path.join(parent, name)
    staging = stage(parent, files, uid, gid, target)
    try:
        os.chmod(staging, 0o755)
        os.rename(staging, target)
    except OSError as exc:
        _remove_tree(staging)
        raise SetWriteError("cannot move the new set into place (%s)" % describe_os_error(exc), target, [],
                            [os.path.join(target, f.name) for f in files])
    fsync_path(parent)
    return target
