"""Run one property of tests/fuzz/properties.py under atheris (libFuzzer, coverage-guided).

Each tests/fuzz/fuzz_<name>.py calls ``main(<name>)``; libFuzzer options pass through, e.g.
``python tests/fuzz/fuzz_trailer.py -max_total_time=60``. The module_utils are imported under
atheris instrumentation so coverage guides the search; a seed corpus (a real signed module made with a
key generated now, a PKCS#7 blob, a certificate, compressed streams, a kernel config) is written to
build/fuzz/corpus/<name>/ on first use. Any exception other than ModSignError, or a broken property
(AssertionError), stops the run with a non-zero exit and the input saved as build/fuzz/crash-*.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

import atheris

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "build" / "collections")]

with atheris.instrument_imports(include=["ansible_collections.skm.modsign"]):
    from tests.fuzz import properties
    from ansible_collections.skm.modsign.plugins.module_utils import _compression as compression
    from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing

from tests.lib.keys import make_key  # noqa: E402

KCONFIG_SEED = (b"#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.1.0 Kernel Configuration\n#\n"
                b"CONFIG_MODULE_SIG=y\n# CONFIG_MODULE_SIG_FORCE is not set\n"
                b"CONFIG_MODULE_SIG_KEY=\"certs/signing_key.pem\"\nCONFIG_MODULE_SIG_SHA512=y\n")


def signing_key(workdir: pathlib.Path) -> signing.SigningKey:
    key = make_key(workdir / "key", "p256")
    return signing.SigningKey.from_files(str(key.key), str(key.cert), hash_name="sha256")


def seeds(key: signing.SigningKey) -> list[bytes]:
    module = properties.small_elf()
    signed = key.sign_payload(module)
    blob = properties.trailer.parse_signature(signed).pkcs7
    streams = [compression.compress(kind, signed) for kind in properties.KINDS]
    return [module, signed, blob, key.certificate.der, KCONFIG_SEED] + streams


def main(name: str) -> None:
    check = getattr(properties, "check_" + name)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="skm-fuzz-"))
    key = signing_key(workdir)
    corpus = REPO / "build" / "fuzz" / "corpus" / name
    if not corpus.is_dir():
        corpus.mkdir(parents=True)
        for number, seed in enumerate(seeds(key)):
            (corpus / ("seed-%d" % number)).write_bytes(seed)
    scratch = workdir / "files"
    scratch.mkdir()

    def one_input(data: bytes) -> None:
        if name == "sign_file":
            check(data, key, str(scratch))
        else:
            check(data)

    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        argv.append(str(corpus))  # libFuzzer adds what it finds to the first corpus directory
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
