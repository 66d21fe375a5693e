"""Report rows for tests of the fleet report: a small varied fleet, and a synthetic one of any size.

The rows have the shape roles/report composes (numbers as the strings Jinja makes). Where a row carries
the running kernel's evidence it is skm_kernel_facts' real answer from Debian's kernel under qemu
(tests/unit/captured_runtime/debian-qemu/expected.json) when that capture exists.
"""

from __future__ import annotations

import json
import pathlib

CAPTURE = pathlib.Path(__file__).resolve().parents[1] / "unit" / "captured_runtime" / "debian-qemu" / "expected.json"


def real_runtime() -> dict:
    if CAPTURE.exists():
        answer = json.loads(CAPTURE.read_text())
        answer.setdefault("keyrings", _replayed_keyrings(CAPTURE.parent))
        return answer
    return {"verdict": {"state": "attention", "attention": ["loaded without a trusted signature (taint E): crc16"],
                        "unknown": []},
            "taint": {"state": "known", "value": ["E"], "mask": 8192}}


def ok_runtime() -> dict:
    return {"verdict": {"state": "ok", "attention": [], "unknown": []},
            "certificates": [{"description": "fleet: ab12", "trusted_for_modules": True, "reason": "in .machine"}],
            "module_trusting_keyrings": [".secondary_trusted_keys", ".builtin_trusted_keys", ".machine"],
            "taint": {"state": "known", "value": [], "mask": 0},
            "sig_enforce": {"state": "known", "value": True}, "lockdown": {"state": "known", "value": "integrity"}}


def row(host, total=120, trusted=None, unsigned=0, foreign=0, mok="enrolled", enforce="enforced (grub)",
        configured=True, active=True, refused="", runtime=None) -> dict:
    trusted = total - unsigned - foreign if trusted is None else trusted
    return {"host": host, "key_fingerprint": "9f1c2ab0e4d37781" * 4, "key_mode": "controller",
            "modules_total": str(total), "modules_trusted": str(trusted), "modules_unsigned": str(unsigned),
            "modules_foreign": str(foreign), "audit_error": "", "dkms_hook": "native", "mok_state": mok,
            "enforce_configured": str(configured), "enforce_active": str(active), "reboot_needed": "False",
            "enforce": enforce, "enforce_refused": refused, "runtime": runtime if runtime is not None else ok_runtime()}


def small_fleet() -> list[dict]:
    rows = [row("web-%02d" % i) for i in range(1, 7)]
    rows += [
        row("db-01", unsigned=2, enforce="refused", configured=False, active=False,
            refused="2 modules of 6.1.0-57-amd64 are unsigned: zfs.ko, spl.ko"),
        row("db-02", foreign=1, mok="pending", enforce="configured, next boot (grub)", active=False),
        row("build-01", enforce="not run", configured=False, active=False, runtime=real_runtime()),
        row("gpu-01", foreign=3, enforce="enforced (systemd-boot), gate overridden"),
        row("edge-01", mok="pending", enforce="configured, next boot (kernel-install)", active=False),
        row("<b>odd-host</b>", total=40, mok="", enforce="not run", configured=False, active=False, runtime={}),
    ]
    return rows


def synthetic_fleet(count: int) -> list[dict]:
    rows = []
    for i in range(count):
        rows.append(row("host-%04d" % i, unsigned=1 if i % 17 == 3 else 0, foreign=2 if i % 29 == 5 else 0,
                        mok="pending" if i % 23 == 0 else "enrolled", active=i % 3 != 0,
                        runtime=real_runtime() if i % 41 == 7 else ok_runtime()))
    return rows


def _replayed_keyrings(root: pathlib.Path) -> dict:
    """The keyrings of that capture, read again by _runtime from the recorded /proc/keys and keyctl output."""
    from ansible_collections.skm.modsign.plugins.module_utils import _runtime as rt
    commands = json.loads((root / "commands.json").read_text())
    prefixes = rt.Prefixes(str(root / "proc"), str(root / "sys"), str(root / "boot"))
    return rt.read_keyrings(prefixes, lambda argv: tuple(commands.get(" ".join(argv), (127, "", "not recorded"))))
