"""Record this machine's kernel evidence for tests/unit (python -m tests.runtime.capture_host NAME).

Writes tests/unit/captured_runtime/NAME/: the files skm_kernel_facts reads (proc/, sys/) and the output
of the commands it runs (commands.json, keyed by the command line). The kernel log keeps only the
lines skm_kernel_facts looks for plus the first ten (the kernel command line is dropped: it can carry
anything the boot loader was given). Nothing here is secret: key serials, key descriptions, counts.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
KEYRINGS = (".builtin_trusted_keys", ".secondary_trusted_keys", ".machine", ".platform", ".blacklist")
FILES = ("/proc/keys", "/proc/key-users", "/proc/modules", "/proc/sys/kernel/tainted", "/proc/sys/kernel/osrelease",
         "/sys/kernel/security/lockdown", "/sys/module/module/parameters/sig_enforce")
LOG_WORDS = ("module verification failed", "PKCS#7", "Lockdown", "is rejected", "module key")


def _run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return [proc.returncode, proc.stdout, proc.stderr]


def kernel_log_excerpt(text: str) -> str:
    lines = [line for line in text.splitlines() if "Command line:" not in line and "command line" not in line]
    return "\n".join(lines[:10] + [line for line in lines[10:] if any(w in line for w in LOG_WORDS)]) + "\n"


def main(name: str) -> None:
    out = HERE.parents[0] / "unit" / "captured_runtime" / name
    for path in FILES:
        try:
            data = pathlib.Path(path).read_bytes()
        except OSError:
            continue
        target = out / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    commands = {}
    for ring in KEYRINGS:
        rc, stdout, stderr = commands.setdefault(f"keyctl rlist %:{ring}", _run(["keyctl", "rlist", "%:" + ring]))
        if rc == 0 and ring != ".blacklist":
            for key_id in stdout.split():
                commands[f"keyctl rdescribe {key_id}"] = _run(["keyctl", "rdescribe", key_id])
    commands["keyctl show %:.builtin_trusted_keys"] = _run(["keyctl", "show", "%:.builtin_trusted_keys"])
    rc, stdout, stderr = _run(["dmesg"])
    commands["dmesg"] = [rc, kernel_log_excerpt(stdout), stderr]
    (out / "commands.json").write_text(json.dumps(commands, indent=1, sort_keys=True) + "\n")
    print(out)


if __name__ == "__main__":
    main(sys.argv[1])
