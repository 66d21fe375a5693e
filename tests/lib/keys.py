"""Test keys, made at test time with the openssl command (never committed)."""

from __future__ import annotations

import pathlib
import subprocess
from dataclasses import dataclass

KEY_ARGS = {
    "rsa2048": ["-newkey", "rsa:2048"],
    "rsa3072": ["-newkey", "rsa:3072"],
    "rsa4096": ["-newkey", "rsa:4096"],
    "p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1"],
    "p521": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp521r1"],
    "ed25519": ["-newkey", "ed25519"],
    "rsapss": ["-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048"],
}


@dataclass(frozen=True)
class TestKey:
    kind: str
    key: pathlib.Path        # PEM private key
    cert: pathlib.Path       # PEM certificate
    cert_der: pathlib.Path   # DER certificate
    combined: pathlib.Path   # key + cert, as CONFIG_MODULE_SIG_KEY wants
    passphrase: str | None = None


def make_key(directory: pathlib.Path, kind: str, passphrase: str | None = None, days: int = 36500,
             cn: str | None = None) -> TestKey:
    """A key pair and self-signed certificate like the kernel's x509.genkey makes them."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / (cn or kind).replace(" ", "_")
    key, cert = stem.with_suffix(".key"), stem.with_suffix(".crt")
    cmd = ["openssl", "req", "-new", "-x509", "-utf8", "-sha512", "-batch", "-days", str(days),
           "-subj", f"/CN={cn or 'skm test ' + kind}/O=skm.modsign tests",
           "-addext", "basicConstraints=critical,CA:FALSE",
           "-addext", "keyUsage=digitalSignature",
           "-addext", "extendedKeyUsage=codeSigning",
           "-addext", "subjectKeyIdentifier=hash",
           "-keyout", str(key), "-out", str(cert)] + KEY_ARGS[kind]
    if passphrase:
        cmd += ["-passout", "stdin"]
    else:
        cmd += ["-nodes"]
    subprocess.run(cmd, check=True, capture_output=True, input=(passphrase or "").encode())
    der = stem.with_suffix(".der")
    subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER", "-out", str(der)],
                   check=True, capture_output=True)
    combined = stem.with_suffix(".pem")
    combined.write_bytes(key.read_bytes() + cert.read_bytes())
    return TestKey(kind, key, cert, der, combined, passphrase)
