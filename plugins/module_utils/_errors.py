# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception type of the signing core.

Private to skm.modsign: other collections must not import it.
Every failure names the file it concerns and the cause, and never carries
secret material (key bytes, passphrases).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Optional


class ModSignError(Exception):
    """A failure of the signing core: ``path`` (may be None) and ``cause``."""

    def __init__(self, cause, path=None):
        # type: (str, Optional[str]) -> None
        self.cause = cause
        self.path = path
        super(ModSignError, self).__init__(self.__str__())

    def __str__(self):
        # type: () -> str
        if self.path:
            return "%s: %s" % (self.path, self.cause)
        return self.cause

    def with_path(self, path):
        # type: (str) -> ModSignError
        """The same error, naming ``path`` if it did not name a file yet."""
        if self.path:
            return self
        return ModSignError(self.cause, path)
