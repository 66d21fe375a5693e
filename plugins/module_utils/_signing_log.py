# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's signing log: one JSON line for every signature controller mode makes.

Private to skm.modsign. Used by the skm_sign action plugin only (no Ansible imports).

A host computes the digests it asks the controller to sign, so a compromised
host can have any content it places under the task's ``path`` signed. The log
is the record that lets an operator find out: which host asked, for which
path, what the module said it was (``.modinfo`` name and vermagic, as the host
read them), the digest signed and with which certificate. Lines are appended
with one ``write`` per task and host (O_APPEND keeps concurrent hosts' lines
whole) and flushed to disk before the host receives a signature.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import json
import os
import stat
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError

LOG_NAME = "signing-log.jsonl"


def default_location(environ):
    # type: (Mapping[str, str]) -> str
    """``$XDG_STATE_HOME/skm-modsign/signing-log.jsonl``, by default under ``~/.local/state``."""
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "skm-modsign", LOG_NAME)


class SigningLog:
    """The log file, open for appending (the open proves it can be written before anything is signed)."""

    def __init__(self, path, host):
        # type: (str, str) -> None
        self.path = path
        self.host = host
        try:
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o700)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(path, flags, 0o600)  # type: Optional[int]
        except OSError as exc:
            raise ModSignError("cannot write the signing log (%s)" % (exc.strerror or exc), path)
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            self.close()
            raise ModSignError("the signing log is not a regular file", path)

    def record(self, planned, signing_key):
        # type: (Sequence[Tuple[Any, Optional[Dict[str, Any]]]], Any) -> None
        """Append a line for each planned signature (``_sign_batch.plan``'s entries that get one), durably."""
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = [json.dumps(self._line(now, outcome, entry, signing_key), sort_keys=True) + "\n"
                 for outcome, entry in planned if entry is not None]
        try:
            data = memoryview("".join(lines).encode("utf-8"))
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except OSError as exc:
            raise ModSignError("cannot write the signing log (%s)" % (exc.strerror or exc), self.path)

    def close(self):
        # type: () -> None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _line(self, now, outcome, entry, signing_key):
        # type: (str, Any, Dict[str, Any], Any) -> Dict[str, str]
        return {
            "time": now,
            "host": self.host,
            "path": entry["p"],
            "module": entry.get("m", ""),
            "vermagic": entry.get("v", ""),
            "digest": "%s:%s" % (signing_key.hash_name, base64.b64decode(entry["d"]).hex()),
            "certificate": signing_key.certificate.fingerprint,
            "action": outcome.status,
        }
