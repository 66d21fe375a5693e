"""skm.modsign.dkms against the real dkms (Debian 12: 3.0.10) and the headers of Debian's current kernel.

The role runs through real ansible-playbook on localhost (tests/dkms/converge.yml); the real dkms then
builds and installs the tiny module tests/dkms/skm-hello for Debian's kernel (named with -k: the kernel
running this machine is not Debian's). Oracles we did not write: what dkms itself prints ("Signing key:",
"Sign command:", "Running the post_build script"), kmod's modinfo (signer, sig_key, sig_hashalgo) and
`openssl cms -verify` of the signature against our certificate.

What is simulated: DKMS without native signing (2.x) is DKMS 3.0.10 with its native signing switched off
by a test drop-in whose sign_file names a missing binary - dkms then prints "modules won't be signed" and
builds unsigned modules, as an old DKMS does; reading /etc/dkms/<module>.conf and running POST_BUILD are
the real dkms's. Everything else is real.

Two test runs on one machine take turns: the fixture holds an flock on HOST_LOCK for the whole module
(dkms, /etc/dkms and /usr/src are host-wide). The machine is left as it was: the role's state=absent,
dkms remove, and a snapshot comparison of /etc/dkms, /var/lib/dkms, /usr/src, /lib/modules/<kver>,
/usr/local/libexec and /etc.

The default run keeps the fast cases (no module build); the DKMS builds (about 15 s each) run with
`make test-dkms` (SKM_SLOW=1).
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shutil
import subprocess

import pytest

from ansible_collections.skm.modsign.plugins.module_utils._trailer import MAGIC, parse_signature
from tests.lib.ansible_run import run_playbook
from tests.lib.keys import make_key
from tests.lib.module_tree import modinfo_signature, openssl_cms_verify

slow = pytest.mark.skipif(not os.environ.get("SKM_SLOW"), reason="slow: DKMS builds run with make test-dkms")

REPO = pathlib.Path(__file__).resolve().parents[2]
CONVERGE = REPO / "tests" / "dkms" / "converge.yml"
SOURCE = REPO / "tests" / "dkms" / "skm-hello"
PACKAGE, VERSION, MODULE = "skm-hello", "1.0", "skm_dkms_hello"
DROP_IN = pathlib.Path("/etc/dkms/framework.conf.d/skm-modsign.conf")
NO_NATIVE = pathlib.Path("/etc/dkms/framework.conf.d/zz-skm-test-no-native-signing.conf")
HOOK_CONF = pathlib.Path("/etc/dkms/skm-modsign-sign.conf")
LIBEXEC = pathlib.Path("/usr/local/libexec/skm-modsign")
WRAPPER = LIBEXEC / "dkms-sign-file"
HOOK = LIBEXEC / "dkms-post-build"
PASSFILE = pathlib.Path("/etc/skm-modsign/dkms-signing-key.pass")
PASSPHRASE = "dkms wrapper passphrase 0815"
RM = {"xz": [], "gzip": [], "zstd": ["--rm"]}   # xz and gzip replace their input by default
HOST_LOCK = pathlib.Path("/run/lock/skm-modsign-test-dkms.lock")
WATCHED = [pathlib.Path(p) for p in ("/etc/dkms", "/var/lib/dkms", "/usr/src", "/usr/local/libexec", "/etc/skm-modsign")]


def _debian_kver() -> str:
    """linux-headers-amd64 depends on linux-headers-<kver> (Debian's current kernel)."""
    dep = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}", "linux-headers-amd64"],
                         capture_output=True, text=True, check=False).stdout
    assert dep.startswith("linux-headers-"), "linux-headers-amd64 missing: run scripts/bootstrap.sh"
    kver = dep.split()[0][len("linux-headers-"):]
    assert pathlib.Path(f"/lib/modules/{kver}/build/Makefile").exists(), f"headers of {kver} missing"
    return kver


def _snapshot(paths) -> dict:
    found = {}
    for root in paths:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                found[str(path)] = path.read_bytes()
            else:
                found[str(path)] = "dir"
    return found


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    assert proc.returncode == 0 or not check, f"{cmd}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


class Host:
    def __init__(self, kver: str, work: pathlib.Path):
        self.kver = kver
        self.work = work
        self.installed = pathlib.Path(f"/lib/modules/{kver}/updates/dkms/{MODULE}.ko")
        self.built = pathlib.Path(f"/var/lib/dkms/{PACKAGE}/{VERSION}/{kver}/x86_64/module/{MODULE}.ko")

    def converge(self, check: bool = False, **variables) -> tuple[dict, dict, str]:
        """Run the role in diff mode; return (facts, stats, raw output). Variables go through a file, never argv."""
        path = self.work / "vars.json"
        path.write_text(json.dumps(variables))
        proc = run_playbook(CONVERGE, "-e", f"@{path}", check=check, diff=True)
        path.unlink()
        report = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}
        stats = report.get("stats", {}).get("localhost", {})
        assert proc.returncode == 0 and stats.get("failures", 1) == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        tasks = report["plays"][0]["tasks"]
        facts = tasks[-1]["hosts"]["localhost"]["msg"]
        return facts, stats, proc.stdout + proc.stderr

    def dkms_build_install(self) -> str:
        """Register the module afresh, let dkms build it for Debian's kernel and install it."""
        _run("dkms", "remove", "-m", PACKAGE, "-v", VERSION, "--all", check=False)
        _run("dkms", "add", "-m", PACKAGE, "-v", VERSION)
        build = _run("dkms", "build", "-m", PACKAGE, "-v", VERSION, "-k", self.kver, "-j", "2")
        install = _run("dkms", "install", "-m", PACKAGE, "-v", VERSION, "-k", self.kver)
        return build.stdout + build.stderr + install.stdout + install.stderr


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("dkms builds and /etc/dkms need root")
    assert shutil.which("dkms"), "dkms missing: run scripts/bootstrap.sh"
    kver = _debian_kver()
    HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = open(HOST_LOCK, "w")  # noqa: SIM115 - held until the fixture ends
    fcntl.flock(lock, fcntl.LOCK_EX)   # another run on this machine finishes and cleans up first
    modules_dir = pathlib.Path(f"/lib/modules/{kver}")
    before = _snapshot(WATCHED)
    before_modules = set(os.listdir(modules_dir))
    source = pathlib.Path(f"/usr/src/{PACKAGE}-{VERSION}")
    assert not source.exists(), f"{source} exists already: a test run left it, or someone else owns it"
    shutil.copytree(SOURCE, source)
    h = Host(kver, tmp_path_factory.mktemp("dkms"))
    try:
        yield h
    finally:
        h.converge(skm_dkms_state="absent")
        _run("dkms", "remove", "-m", PACKAGE, "-v", VERSION, "--all", check=False)
        shutil.rmtree(source, ignore_errors=True)
        NO_NATIVE.unlink(missing_ok=True)
        for name in ("mok.key", "mok.pub"):        # DKMS 3's own key, made at its first unconfigured build
            path = pathlib.Path("/var/lib/dkms") / name
            if str(path) not in before:
                path.unlink(missing_ok=True)
        if not (pathlib.Path("/var/lib/dkms") / PACKAGE).exists():
            for name in set(os.listdir(modules_dir)) - before_modules:   # depmod's files, updates/
                target = modules_dir / name
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        for directory in (LIBEXEC, LIBEXEC.parent, PASSFILE.parent):
            if str(directory) not in before and directory.exists() and not any(directory.iterdir()):
                directory.rmdir()
        after = _snapshot(WATCHED)
        lock.close()   # the snapshot is taken: the next run may start
        assert after == before, f"machine not restored: {sorted(set(after) ^ set(before))}"
        assert set(os.listdir(modules_dir)) == before_modules


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory):
    key = make_key(tmp_path_factory.mktemp("rsa"), "rsa2048")
    key.key.chmod(0o600)
    return key


def _role_vars(key, **extra) -> dict:
    return {"skm_dkms_private_key": str(key.key), "skm_dkms_certificate": str(key.cert), **extra}


def _assert_signed_by(path: pathlib.Path, key, hash_name: str, work: pathlib.Path) -> None:
    """kmod reads the signer, openssl checks the signature over the payload with our certificate."""
    serial = _run("openssl", "x509", "-in", str(key.cert), "-noout", "-serial").stdout.strip().split("=")[1]
    info = modinfo_signature(path)
    assert info["sig_key"].replace(":", "").upper() == serial.upper(), (path, info)
    assert info["signer"] == f"skm test {key.kind}"
    assert info["sig_hashalgo"] == hash_name
    data = path.read_bytes()
    assert data.count(MAGIC) == 1, f"{path}: more than one signature"
    sig = parse_signature(data)
    openssl_cms_verify(sig.payload, sig.pkcs7, key.cert, work)


# ------------------------------------------------------------------ fast: no module build

def test_native_files_idempotence_and_wrapper(host, rsa_key, debian_kernel, tmp_path):
    framework = pathlib.Path("/etc/dkms/framework.conf").read_bytes()
    facts, stats, _output = host.converge(**_role_vars(rsa_key))
    assert facts["hook"] == "native" and facts["can_sign"] and facts["version"].startswith("3.")
    text = DROP_IN.read_text()
    assert f"mok_signing_key={rsa_key.key}\n" in text and f"mok_certificate={rsa_key.cert}\n" in text
    assert f"sign_file={WRAPPER}\n" in text
    assert os.access(WRAPPER, os.X_OK)
    assert pathlib.Path("/etc/dkms/framework.conf").read_bytes() == framework
    # Source the drop-in as dkms's read_framework_conf does and see the values.
    shown = _run("bash", "-c", f'. {DROP_IN}; echo "$sign_file|$mok_signing_key|$mok_certificate"').stdout.strip()
    assert shown == f"{WRAPPER}|{rsa_key.key}|{rsa_key.cert}"
    assert not HOOK_CONF.exists() and not PASSFILE.exists()
    _facts, stats, _output = host.converge(check=True, **_role_vars(rsa_key))
    assert stats["changed"] == 0
    _facts, stats, _output = host.converge(**_role_vars(rsa_key))
    assert stats["changed"] == 0

    # The wrapper as DKMS calls it: DKMS passes the kernel config's hash, the wrapper signs with ours
    # (skm_dkms_hash, sha256 here) and cuts off the old signature (Debian's own, on a real module).
    module = tmp_path / "dummy.ko"
    shutil.copy(debian_kernel.modules_dir / "kernel/drivers/net/dummy.ko", module)
    original = parse_signature(module.read_bytes())
    assert modinfo_signature(module)["signer"] != "skm test rsa2048"
    out = _run(str(WRAPPER), "sha512", str(rsa_key.key), str(rsa_key.cert), str(module)).stdout
    assert "(sha256, /usr/lib/linux-kbuild-6.1/scripts/sign-file)" in out   # found through the vermagic
    _assert_signed_by(module, rsa_key, "sha256", tmp_path / "cms")
    assert parse_signature(module.read_bytes()).payload == original.payload


def test_post_build_hook_signs_plain_and_compressed_modules(host, rsa_key, debian_kernel, tmp_path):
    """The hook as DKMS runs it: from <tree>/<module>/<version>/build with KERNELVER ARCH, on the modules
    in ../KERNELVER/ARCH/module/ (an older DKMS may have compressed them already)."""
    own = pathlib.Path("/etc/dkms/skm-test-own.conf")             # a module's configuration of its own
    own.write_text('POST_BUILD="their-own-hook.sh"\n')
    linked = pathlib.Path("/etc/dkms/skm-test-linked.conf")
    try:
        variables = _role_vars(rsa_key, skm_dkms_method="post_build", skm_dkms_resign=False,
                               skm_dkms_modules=["skm-test-own", "skm-test-linked"])
        facts, _stats, output = host.converge(**variables)
        assert own.read_text() == 'POST_BUILD="their-own-hook.sh"\n' and "skm-test-own.conf is not ours" in output
        assert linked.is_symlink() and os.readlink(linked) == str(HOOK_CONF)
        _facts, stats, _output = host.converge(**variables)
        assert stats["changed"] == 0
        host.converge(**_role_vars(rsa_key, skm_dkms_resign=False))   # back to native: our links go, theirs stays
        assert not linked.is_symlink() and not HOOK_CONF.exists() and own.exists() and DROP_IN.exists()
    finally:
        own.unlink()
        linked.unlink(missing_ok=True)

    facts, _stats, _output = host.converge(**_role_vars(rsa_key, skm_dkms_method="post_build", skm_dkms_resign=False))
    assert facts["hook"] == "post_build"
    assert not DROP_IN.exists() and os.access(HOOK, os.X_OK)
    assert HOOK_CONF.read_text().splitlines()[-1] == (
        'POST_BUILD="../../../../../../usr/local/libexec/skm-modsign/dkms-post-build ${kernelver} ${arch}"')
    build = tmp_path / "tree" / "pkg" / "1" / "build"
    moddir = tmp_path / "tree" / "pkg" / "1" / debian_kernel.version / "x86_64" / "module"
    build.mkdir(parents=True)
    moddir.mkdir(parents=True)
    names = {"plain": "dummy", "xz": "veth", "gzip": "geneve", "zstd": "macvlan"}
    for compression, name in names.items():
        shutil.copy(debian_kernel.modules_dir / f"kernel/drivers/net/{name}.ko", moddir / f"{name}.ko")
        if compression != "plain":
            _run(compression, "-q", *RM[compression], str(moddir / f"{name}.ko"))
    proc = subprocess.run([str(HOOK), debian_kernel.version, "x86_64"], cwd=build, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in moddir.iterdir()) == ["dummy.ko", "geneve.ko.gz", "macvlan.ko.zst", "veth.ko.xz"]
    assert "CRC32" in _run("xz", "--robot", "--list", str(moddir / "veth.ko.xz")).stdout  # the kernel's decoder
    for compression, path in (("xz", "veth.ko.xz"), ("gzip", "geneve.ko.gz"), ("zstd", "macvlan.ko.zst")):
        _run(compression, "-d", "-q", *RM[compression], str(moddir / path))
    for name in names.values():
        _assert_signed_by(moddir / f"{name}.ko", rsa_key, "sha256", tmp_path / "cms" / name)


def test_controller_mode_says_hosts_cannot_sign_and_signs_with_the_controller_key(host, rsa_key, debian_kernel,
                                                                                  tmp_path):
    host.converge(**_role_vars(rsa_key))                       # native first: controller mode must undo it
    assert DROP_IN.exists()
    built = tmp_path / "updates" / "dkms"
    built.mkdir(parents=True)
    shutil.copy(debian_kernel.modules_dir / "kernel/drivers/net/dummy.ko", built / "dummy.ko")
    variables = _role_vars(rsa_key, skm_dkms_key_mode="controller", skm_dkms_resign_paths=[str(built)])
    facts, _stats, output = host.converge(**variables)
    assert facts["hook"] == "controller" and facts["can_sign"] is False
    assert "this host cannot sign modules when DKMS builds them" in output
    assert "the next run of this role signs them" in output
    assert not DROP_IN.exists() and not WRAPPER.exists() and not HOOK_CONF.exists()
    assert facts["resigned"] == [str(built / "dummy.ko")]       # Debian's signature replaced by ours
    _assert_signed_by(built / "dummy.ko", rsa_key, "sha256", tmp_path / "cms")
    facts, stats, _output = host.converge(**variables)
    assert stats["changed"] == 0 and facts["resigned"] == []


# ------------------------------------------------------------------ slow: the real dkms builds skm-hello

@slow
def test_dkms_builds_are_signed_natively_and_old_builds_re_signed(host, rsa_key, tmp_path):
    # Before the role: DKMS 3 signs with a key of its own (made at /var/lib/dkms/mok.key).
    host.converge(skm_dkms_state="absent")
    output = host.dkms_build_install()
    assert "Signing key: /var/lib/dkms/mok.key" in output
    assert modinfo_signature(host.installed)["signer"] == "DKMS module signing key"
    # The role takes over what DKMS built (installed copy and DKMS's own copy) ...
    facts, _stats, _output = host.converge(**_role_vars(rsa_key))
    assert sorted(facts["resigned"]) == sorted([str(host.installed), str(host.built)])
    for path in (host.installed, host.built):
        _assert_signed_by(path, rsa_key, "sha256", tmp_path / "cms")
    # ... and from now on DKMS signs with our key through the drop-in and the wrapper.
    output = host.dkms_build_install()
    assert f"Sign command: {WRAPPER}" in output and f"Signing key: {rsa_key.key}" in output
    assert "skm-modsign: signed" in output
    _assert_signed_by(host.installed, rsa_key, "sha256", tmp_path / "cms2")
    _facts, stats, _output = host.converge(**_role_vars(rsa_key))
    assert stats["changed"] == 0


@slow
def test_passphrase_reaches_sign_file_through_the_wrapper(host, rsa_key, tmp_path):
    key = make_key(tmp_path / "key", "p256", passphrase=PASSPHRASE)
    key.key.chmod(0o600)
    assert "ENCRYPTED" in key.key.read_text()
    variables = _role_vars(key, skm_dkms_key_passphrase=PASSPHRASE, skm_dkms_hash="sha384")
    _facts, _stats, ansible_output = host.converge(**variables)
    assert PASSFILE.read_text() == PASSPHRASE
    assert PASSFILE.stat().st_mode & 0o777 == 0o600 and PASSFILE.stat().st_uid == 0
    assert PASSFILE.parent.stat().st_mode & 0o777 == 0o700
    output = host.dkms_build_install()
    assert f"Sign command: {WRAPPER}" in output
    _assert_signed_by(host.installed, key, "sha384", tmp_path / "cms")
    for text in (ansible_output, output, DROP_IN.read_text(), WRAPPER.read_text()):
        assert PASSPHRASE not in text
    _facts, stats, _output = host.converge(**variables)
    assert stats["changed"] == 0
    host.converge(**_role_vars(rsa_key))                      # a key without passphrase: the file goes
    assert not PASSFILE.exists()


@slow
def test_post_build_hook_when_dkms_cannot_sign(host, rsa_key, tmp_path):
    NO_NATIVE.write_text('# skm.modsign test: DKMS without native signing\nsign_file="/nonexistent/skm-no-sign-file"\n')
    try:
        host.converge(skm_dkms_state="absent")
        _run("dkms", "remove", "-m", PACKAGE, "-v", VERSION, "--all", check=False)
        _run("dkms", "add", "-m", PACKAGE, "-v", VERSION)    # DKMS knows the module: the role links it
        facts, _stats, _output = host.converge(**_role_vars(rsa_key, skm_dkms_method="post_build", skm_dkms_resign=False))
        assert facts["hook"] == "post_build"
        link = pathlib.Path(f"/etc/dkms/{PACKAGE}.conf")
        assert link.is_symlink() and os.readlink(link) == str(HOOK_CONF)
        output = host.dkms_build_install()
        assert "modules won't be signed" in output              # native signing really is off
        assert "Running the post_build script" in output and "skm-modsign: signed" in output
        _assert_signed_by(host.installed, rsa_key, "sha256", tmp_path / "cms")
        _facts, stats, _output = host.converge(**_role_vars(rsa_key, skm_dkms_method="post_build", skm_dkms_resign=False))
        assert stats["changed"] == 0
        host.converge(**_role_vars(rsa_key))                     # back to native: links and hook go
        assert not link.is_symlink() and not HOOK_CONF.exists() and not HOOK.exists() and DROP_IN.exists()
    finally:
        NO_NATIVE.unlink(missing_ok=True)
