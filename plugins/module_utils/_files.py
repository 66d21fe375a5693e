# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading files with errors that name the file and the cause.

Private to skm.modsign.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

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
