"""Record what the real mokutil prints, in the OVMF VM, for the unit tests of the parser.

Run: ``.venv/bin/python -m tests.vm.capture_mokutil`` (boots the VM once, ~1 minute); writes
``tests/vm/captured/mokutil-<version>.json``: a list of {argv, rc, stdout, stderr, note}.
The certificate is made here by openssl; only its public part goes into the VM.
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.lib.debian_kernel import debian_kernel  # noqa: E402
from tests.vm.vm import DebianVM  # noqa: E402

PASSWORD = "capture-pw"  # a throwaway password for a throwaway VM; the hash is recorded, not used again


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        der = pathlib.Path(tmp) / "cert.der"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(pathlib.Path(tmp) / "key.pem"), "-outform", "DER", "-out", str(der), "-days", "30",
                        "-subj", "/CN=skm capture MOK"], check=True, capture_output=True)
        records = []
        with DebianVM(debian_kernel()) as vm:
            vm.put("/root/cert.der", der.read_bytes())
            vm.put("/root/cert.pem", subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(der)],
                                                    check=True, capture_output=True).stdout)
            version = vm.run(["mokutil", "--version"]).stdout.decode().strip() or "unknown"

            def rec(note, *argv, stdin=b""):
                proc = vm.run(list(argv), input=stdin)
                records.append({"note": note, "argv": list(argv), "rc": proc.returncode,
                                "stdout": proc.stdout.decode(), "stderr": proc.stderr.decode()})
                return proc

            rec("sb-state, OVMF in setup mode", "mokutil", "--sb-state")
            rec("test-key, fresh", "mokutil", "--test-key", "/root/cert.der")
            rec("test-key, PEM file", "mokutil", "--test-key", "/root/cert.pem")
            rec("list-new, empty", "mokutil", "--list-new")
            h = rec("generate-hash from stdin", "mokutil", "--generate-hash",
                    stdin=f"{PASSWORD}\n{PASSWORD}\n".encode())
            vm.put("/root/hash", h.stdout.decode().strip().splitlines()[-1].encode())
            rec("import, first", "mokutil", "--import", "/root/cert.der", "--hash-file", "/root/hash")
            rec("import, again", "mokutil", "--import", "/root/cert.der", "--hash-file", "/root/hash")
            rec("test-key, pending", "mokutil", "--test-key", "/root/cert.der")
            rec("list-new, pending", "mokutil", "--list-new")
            rec("delete, cancels pending import", "mokutil", "--delete", "/root/cert.der", "--hash-file", "/root/hash")
            rec("import with a PEM file", "mokutil", "--import", "/root/cert.pem", "--hash-file", "/root/hash")
            rec("import, broken hash file", "mokutil", "--import", "/root/cert.der", "--hash-file", "/root/cert.der")
            out = HERE / "captured" / f"mokutil-{version}.json"
            out.write_text(json.dumps({"mokutil": version, "certificate_der_b64": base64.b64encode(der.read_bytes()).decode(),
                                       "records": records}, indent=1) + "\n")
        print(out)


if __name__ == "__main__":
    main()
