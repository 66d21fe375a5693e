"""Our e2e kernel (make e2e builds and caches it): its own evidence read by skm_kernel_facts' reader.

The kernel is a tinyconfig too small for python3, so the guest prints what skm_kernel_facts reads
(tests/runtime/e2e_capture.py: /proc/keys, keyctl, taint, /proc/modules, sig_enforce, dmesg) and the reader
runs here on that output. Skipped when no e2e kernel is cached.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _runtime as rt
from tests.lib.debian_kernel import cache_dir
from tests.runtime import e2e_capture

pytestmark = pytest.mark.skipif(not list((cache_dir() / "e2e" / "kernels").glob("*/arch/x86/boot/bzImage")),
                                reason="no cached e2e kernel (make e2e)")


def test_e2e_kernel_trusts_our_certificates_and_says_so(tmp_path):
    out = e2e_capture.main(tmp_path / "capture")
    commands = json.loads((out / "commands.json").read_text())

    def run(argv):
        return tuple(commands.get(" ".join(argv), (127, "", "not recorded")))
    ev = rt.collect([str(out / "ours-rsa.crt"), str(out / "ours-p384.crt")],
                    rt.Prefixes(str(out / "proc"), str(out / "sys"), str(out / "boot")), run)
    assert [c["trusted_for_modules"] for c in ev["certificates"]] == [True, True]
    assert ev["module_trusting_keyrings"] == [".builtin_trusted_keys"]
    (module,) = ev["modules"]["value"]
    assert module["kernel_verified"] and module["ours"] and "E" not in ev["taint"]["value"]
    assert (out / "insmod.txt").read_text().splitlines() == ["SKM-INSMOD signed rc=0", "SKM-INSMOD unsigned rc=129"]
    assert {r["detail"] for r in ev["rejections"]["value"]} == {"unsigned module"}
    assert ev["sig_enforce"]["value"] is True and ev["config_module_sig_force"]["value"] is True
