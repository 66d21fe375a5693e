# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Machine Owner Key (MOK) enrollment through mokutil: read the state, plan, stage requests.

Private to skm.modsign: other collections must not import it. No Ansible imports: every
mokutil call goes through an injected ``runner(argv, data) -> (rc, stdout, stderr)``.

Facts this follows (mokutil's own source, 0.6.0 to 0.7.x):
- The state is read from what mokutil *prints*, never from its exit code: ``--test-key``
  swapped the meaning of 0 and 1 in 0.7.2, ``--import`` exits 0 when it skipped every key,
  ``--sb-state`` exits 0 whether Secure Boot is on or off.
- ``--test-key`` checks, in order: the kernel keyrings (unless ``--ignore-keyring``), UEFI db,
  MokListRT ("is already enrolled"), MokNew ("is already in the enrollment request"), dbx,
  MokListXRT. A pending deletion (MokDel) is only visible in ``--list-delete``, which prints a
  "SHA1 Fingerprint:" line per key.
- ``--import`` of a key that waits in MokDel cancels that deletion ("Removed ... from MokDel");
  ``--delete`` of a key that waits in MokNew cancels that enrollment ("Removed ... from MokNew").
- The one-time password: ``--generate-hash`` with no value reads it twice from stdin (so it
  never appears in an argument list); its crypt(3) line is given to ``--import``/``--delete``
  through ``--hash-file``. ``--trust-mok``/``--untrust-mok`` read their own 8-16 character
  password from stdin.
- mokutil never enrolls anything: MokManager does, after a reboot, when someone at the console
  confirms with the password. This code stages requests and says so.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import os
import re
import tempfile
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from ansible_collections.skm.modsign.plugins.module_utils._errors import ModSignError
from ansible_collections.skm.modsign.plugins.module_utils import _keys as keys
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import check_signing_certificate
from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import certificate_id, name_to_text

SHIM_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
EFIVARS_DIR = "/sys/firmware/efi/efivars"
MOKVAR_DIR = "/sys/firmware/efi/mok-variables"   # shim's MOK config table as the kernel exposes it
PASSWORD_MAX = 256          # mokutil PASSWORD_MIN/MAX for MokAuth/MokDelAuth
TRUST_PASSWORD_MIN = 8      # mokutil SB_PASSWORD_MIN/MAX for --trust-mok/--untrust-mok
TRUST_PASSWORD_MAX = 16
TIMEOUT_DEFAULT = 10        # shim's countdown when MokTimeout is absent

# states of the certificate
ENROLLED = "enrolled"
PENDING = "pending"
PENDING_DELETE = "pending_delete"
ABSENT = "absent"
IN_DB = "in_db"             # in the firmware's db: trusted without MOK, mokutil will not import it
BLOCKED = "blocked"         # in dbx or MokListX: mokutil refuses it

Runner = Callable[[List[str], Optional[bytes]], Tuple[int, str, str]]

_UNSUPPORTED = (
    "EFI variables are not supported on this system",
    "This system doesn't support Secure Boot",
    'Failed to read "SecureBoot" variable',
)
_FINGERPRINT = re.compile(r"^SHA1 Fingerprint:\s*([0-9a-fA-F:]+)\s*$", re.M)
_CRYPT_LINE = re.compile(r"^\$[0-9a-z]+\$[./0-9A-Za-z]*\$[./0-9A-Za-z]+$")


class MokRequestError(ModSignError):
    """A request failed after earlier ones were made: ``done`` lists what mokutil did before."""

    def __init__(self, cause, path, done):
        # type: (str, Optional[str], List[str]) -> None
        super(MokRequestError, self).__init__(cause, path)
        self.done = done


class MokUnsupported(ModSignError):
    """This host cannot do MOK enrollment (no EFI variables, no Secure Boot support, no mokutil)."""


class SecureBoot(NamedTuple):
    state: str                   # enabled / disabled / unsupported / unknown
    setup_mode: bool
    shim_validation_disabled: bool


class MokStatus(NamedTuple):
    state: str                   # ENROLLED / PENDING / PENDING_DELETE / ABSENT / IN_DB / BLOCKED
    secure_boot: str
    setup_mode: bool
    in_kernel_keyring: bool      # mokutil (without --ignore-keyring) finds it in a kernel keyring
    trust_mok: Optional[bool]    # MokListTrustedRT present (None: cannot tell)
    trust_mok_pending: bool      # MokListTrustedNew waits for MokManager
    timeout: int                 # MokManager countdown in seconds (-1: wait forever)
    fingerprint: str             # SHA-1, as MokManager and mokutil show it
    subject: str

    def as_dict(self):
        # type: () -> Dict[str, object]
        return dict(self._asdict())


class Action(NamedTuple):
    name: str                    # import / delete / timeout / trust_mok / untrust_mok
    value: Optional[int] = None


# ---------------------------------------------------------------------------------------------
# certificate

def read_certificate(path):
    # type: (str) -> bytes
    """The DER certificate at ``path``; PEM and anything else that is not DER X.509 is refused."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        raise ModSignError("cannot read certificate (%s)" % (exc.strerror or exc), path)
    if b"PRIVATE KEY-----" in data[:200]:
        raise ModSignError("is a private key, not a certificate: give the DER certificate", path)
    if data.lstrip().startswith(b"-----BEGIN"):
        raise ModSignError("is PEM; mokutil needs the DER form (skm_genkey writes one with formats: [der], "
                           "or convert: openssl x509 -in %s -outform DER -out cert.der)" % path, path)
    certificate_id(data, path)  # raises "not a valid X.509 certificate (...)"
    return data


def check_enrollable(der, path, now=None):
    # type: (bytes, str, Optional[datetime.datetime]) -> None
    """Refuse, before mokutil is run, a certificate our signer and the kernel cannot use: a key type
    other than RSA or ECDSA P-256/P-384 (Ed25519, Ed448, RSA-PSS, P-521), or one outside its validity
    dates (the rule in _keys: we enroll only what we would sign with)."""
    check_signing_certificate(certificate_id(der, path), path)
    keys.check_certificate_curve(der, path)
    valid_from, valid_to = keys.validity_window(der, path)
    keys.check_valid_now(valid_from, valid_to, path, now)


def sha1_fingerprint(der):
    # type: (bytes) -> str
    """The fingerprint mokutil --list-* and MokManager show: SHA-1 of the DER, colon-separated."""
    digest = hashlib.sha1(der).hexdigest()  # nosec - an identifier, as mokutil prints it
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def subject_text(der):
    # type: (bytes) -> str
    return name_to_text(certificate_id(der).subject)


# ---------------------------------------------------------------------------------------------
# parsing what mokutil prints

def is_unsupported(text):
    # type: (str) -> bool
    return any(marker in text for marker in _UNSUPPORTED)


def parse_sb_state(stdout, stderr):
    # type: (str, str) -> SecureBoot
    """``mokutil --sb-state``: decided by the words, not by the exit code (0 either way)."""
    text = stdout + stderr
    setup = "Platform is in Setup Mode" in text
    shim_off = "SecureBoot validation is disabled in shim" in text
    if "SecureBoot enabled" in text:
        return SecureBoot("enabled", setup, shim_off)
    if "SecureBoot disabled" in text:
        return SecureBoot("disabled", setup, shim_off)
    if is_unsupported(text):
        return SecureBoot("unsupported", False, False)
    return SecureBoot("unknown", setup, shim_off)


def parse_test_key(stdout, stderr, path):
    # type: (str, str, str) -> str
    """``mokutil --test-key`` verdict from its words: a state, or "in_kernel_keyring"."""
    text = stdout + "\n" + stderr
    if "Not a valid x509 certificate" in text:
        raise ModSignError("mokutil says this is not a valid x509 certificate", path)
    if is_unsupported(text):
        raise MokUnsupported(_first_line(text))
    checks = (
        ("is already in the built-in trusted keyring", "in_kernel_keyring"),
        ("is already in db", IN_DB),
        ("is already enrolled", ENROLLED),
        ("is already in the enrollment request", PENDING),
        ("is blocked in dbx", BLOCKED),
        ("is blocked in MokListXRT", BLOCKED),
        ("is blocked", BLOCKED),           # "CA of X is blocked"
        ("is not enrolled", ABSENT),
    )
    if "CA of" in text and "is already enrolled" in text:
        return ENROLLED
    for words, verdict in checks:
        if words in text:
            return verdict
    raise ModSignError("unexpected output from mokutil --test-key: %s" % _first_line(text), path)


def parse_fingerprints(listing):
    # type: (str) -> List[str]
    """The SHA-1 fingerprints in a ``mokutil --list-enrolled/--list-new/--list-delete`` listing."""
    return [match.group(1).lower() for match in _FINGERPRINT.finditer(listing)]


def parse_generate_hash(stdout):
    # type: (str) -> str
    """The crypt(3) line of ``mokutil --generate-hash`` (after its two "input password:" prompts)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if _CRYPT_LINE.match(line):
            return line
    raise ModSignError("mokutil --generate-hash printed no password hash")


def parse_request(stdout, stderr, path):
    # type: (str, str, str) -> str
    """What ``mokutil --import/--delete`` did: "requested", "cancelled" or "skipped"; errors raise."""
    text = stdout + "\n" + stderr
    if is_unsupported(text):
        raise MokUnsupported(_first_line(text))
    if "is not a valid x509 certificate" in text:
        raise ModSignError("mokutil says this is not a valid x509 certificate in DER format", path)
    for failure in ("Failed to", "Abort", "corrupted string", "Couldn't generate hash"):
        if failure in text:
            raise ModSignError("mokutil failed: %s" % "; ".join(
                line.strip() for line in stderr.splitlines() if line.strip()) or _first_line(text, failure), path)
    if re.search(r"^Removed .* from Mok(New|Del)$", stdout, re.M):
        return "cancelled"
    if "SKIP:" in stdout or "Skip " in stdout:
        return "skipped"
    return "requested"


def _first_line(text, containing=None):
    # type: (str, Optional[str]) -> str
    for line in text.splitlines():
        if line.strip() and (containing is None or containing in line):
            return line.strip()
    return text.strip() or "(no output)"


# ---------------------------------------------------------------------------------------------
# EFI variables mokutil has no query for (read-only)

def read_efivar(name, guid=SHIM_GUID, efivars_dir=EFIVARS_DIR):
    # type: (str, str, str) -> Optional[bytes]
    """The data of an EFI variable from efivarfs (the 4 attribute bytes dropped), or None."""
    try:
        with open(os.path.join(efivars_dir, "%s-%s" % (name, guid)), "rb") as handle:
            raw = handle.read()
    except (IOError, OSError):
        return None
    return raw[4:] if len(raw) >= 4 else None


def read_timeout(efivars_dir=EFIVARS_DIR):
    # type: (str) -> int
    """MokTimeout as mokutil --timeout writes it (int32, little endian); absent: shim's 10 s."""
    data = read_efivar("MokTimeout", efivars_dir=efivars_dir)
    if not data or len(data) < 4:
        return TIMEOUT_DEFAULT
    return int.from_bytes(data[:4], "little", signed=True)


def read_trust(efivars_dir=EFIVARS_DIR, mokvar_dir=MOKVAR_DIR):
    # type: (str, str) -> Tuple[Optional[bool], bool]
    """(MOK keys trusted by the kernel now, a trust change pending). The kernel checks only the
    presence of MokListTrustedRT, which shim publishes in its config table (and as a variable)."""
    trusted = (os.path.exists(os.path.join(mokvar_dir, "MokListTrustedRT"))
               or read_efivar("MokListTrustedRT", efivars_dir=efivars_dir) is not None)
    pending = read_efivar("MokListTrustedNew", efivars_dir=efivars_dir) is not None
    return trusted, pending


# ---------------------------------------------------------------------------------------------
# mokutil

class Mokutil:
    """mokutil through ``runner``; every method decides from the words printed."""

    def __init__(self, runner, binary="mokutil"):
        # type: (Runner, str) -> None
        self.runner = runner
        self.binary = binary

    def _run(self, args, data=None):
        # type: (List[str], Optional[bytes]) -> Tuple[int, str, str]
        return self.runner([self.binary] + args, data)

    def sb_state(self):
        # type: () -> SecureBoot
        _rc, out, err = self._run(["--sb-state"])
        state = parse_sb_state(out, err)
        if state.state == "unsupported":
            raise MokUnsupported("no EFI variables on this host (mokutil: %s)" % _first_line(out + err))
        return state

    def test_key(self, path, ignore_keyring=True):
        # type: (str, bool) -> str
        args = ["--test-key", path] + (["--ignore-keyring"] if ignore_keyring else [])
        _rc, out, err = self._run(args)
        return parse_test_key(out, err, path)

    def fingerprints(self, which):
        # type: (str) -> List[str]
        """Fingerprints in MokNew ("new"), MokDel ("delete") or MokListRT ("enrolled")."""
        _rc, out, err = self._run(["--list-%s" % which])
        if is_unsupported(out + err):
            raise MokUnsupported(_first_line(out + err))
        return parse_fingerprints(out)

    def password_hash(self, password):
        # type: (str) -> str
        """crypt(3) hash of ``password`` by mokutil itself; the password goes through stdin only."""
        check_password(password)
        data = (password + "\n" + password + "\n").encode("utf-8")
        rc, out, err = self._run(["--generate-hash"], data)
        if rc != 0 and not _CRYPT_LINE.search(out):
            raise ModSignError("mokutil --generate-hash failed: %s" % _first_line(err or out))
        return parse_generate_hash(out)

    def request(self, action, path, hash_file, ignore_keyring=False):
        # type: (str, str, str, bool) -> str
        """``--import`` or ``--delete`` of ``path`` with the password hash in ``hash_file``."""
        args = ["--%s" % action, path, "--hash-file", hash_file]
        if ignore_keyring and action == "import":
            args.append("--ignore-keyring")
        rc, out, err = self._run(args)
        outcome = parse_request(out, err, path)
        if rc != 0 and outcome == "requested":
            raise ModSignError("mokutil --%s failed (exit %d): %s" % (action, rc, _first_line(err or out)), path)
        return outcome

    def set_timeout(self, seconds):
        # type: (int) -> None
        rc, out, err = self._run(["--timeout", str(seconds)])
        if rc != 0 or "Failed" in err:
            raise ModSignError("mokutil --timeout %d failed: %s" % (seconds, _first_line(err or out)))

    def set_trust(self, trust, password):
        # type: (bool, str) -> None
        check_password(password, TRUST_PASSWORD_MIN, TRUST_PASSWORD_MAX, "trust_mok")
        data = (password + "\n" + password + "\n").encode("utf-8")
        rc, out, err = self._run(["--trust-mok" if trust else "--untrust-mok"], data)
        if rc != 0 or "Failed" in err or "Abort" in err:
            action = "trust-mok" if trust else "untrust-mok"
            raise ModSignError("mokutil --%s failed: %s" % (action, _first_line(err or out)))


def check_password(password, low=1, high=PASSWORD_MAX, purpose="password"):
    # type: (str, int, int, str) -> None
    """mokutil's limits; a newline would end the password early. The message never shows it."""
    if "\n" in password or "\r" in password or "\0" in password:
        raise ModSignError("the MOK password must not contain a newline or NUL character")
    if not low <= len(password) <= high:
        raise ModSignError("the MOK password must be %d to %d characters for %s (it has %d)"
                           % (low, high, purpose, len(password)))


# ---------------------------------------------------------------------------------------------
# state, plan, apply

def query(mokutil, path, der, efivars_dir=EFIVARS_DIR, mokvar_dir=MOKVAR_DIR):
    # type: (Mokutil, str, bytes, str, str) -> MokStatus
    """The certificate's MOK state and the host's Secure Boot / MokManager settings. Read only."""
    secure_boot = mokutil.sb_state()
    verdict = mokutil.test_key(path, ignore_keyring=True)
    keyring = mokutil.test_key(path, ignore_keyring=False) == "in_kernel_keyring"
    fingerprint = sha1_fingerprint(der)
    state = verdict
    if verdict == ENROLLED and fingerprint in mokutil.fingerprints("delete"):
        state = PENDING_DELETE
    trusted, trust_pending = read_trust(efivars_dir, mokvar_dir)
    return MokStatus(state, secure_boot.state, secure_boot.setup_mode, keyring, trusted, trust_pending,
                     read_timeout(efivars_dir), fingerprint, subject_text(der))


def plan(status, state, ignore_keyring=False, timeout=None, trust_mok=None):
    # type: (MokStatus, str, bool, Optional[int], Optional[bool]) -> List[Action]
    """The mokutil requests that bring ``status`` to ``state`` ("present" or "absent")."""
    actions = []  # type: List[Action]
    if state == "present":
        if status.state == BLOCKED:
            raise ModSignError("the certificate is blocked (in dbx or MokListX): MokManager would refuse it")
        kernel_has_it = status.in_kernel_keyring and not ignore_keyring
        if status.state == PENDING_DELETE or (status.state == ABSENT and not kernel_has_it):
            actions.append(Action("import"))
    elif state == "absent":
        if status.state in (PENDING, ENROLLED):
            actions.append(Action("delete"))
    if timeout is not None and timeout != status.timeout:
        actions.append(Action("timeout", timeout))
    if trust_mok is not None and not status.trust_mok_pending and bool(status.trust_mok) != trust_mok:
        actions.append(Action("trust_mok" if trust_mok else "untrust_mok"))
    return actions


def predict(status, actions):
    # type: (MokStatus, List[Action]) -> MokStatus
    """The status after ``actions`` (check mode reports this)."""
    after = status
    for action in actions:
        if action.name == "import":
            after = after._replace(state=ENROLLED if status.state == PENDING_DELETE else PENDING)
        elif action.name == "delete":
            after = after._replace(state=ABSENT if status.state == PENDING else PENDING_DELETE)
        elif action.name == "timeout":
            after = after._replace(timeout=action.value)
        else:
            after = after._replace(trust_mok_pending=True)
    return after


# What each request leaves in the lists mokutil --list-new / --list-delete print: (list, listed or not).
_EXPECTED_LISTING = {
    ("import", "requested"): ("new", True),
    ("import", "cancelled"): ("delete", False),     # "Removed ... from MokDel"
    ("delete", "requested"): ("delete", True),
    ("delete", "cancelled"): ("new", False),        # "Removed ... from MokNew"
}


def confirm_request(mokutil, action, outcome, fingerprint, path, done):
    # type: (Mokutil, str, str, str, str, List[str]) -> None
    """Read the request back: mokutil --import can exit 0 and stage nothing (a firmware that accepts the
    variable write and keeps nothing, a full variable store), so its exit code proves nothing."""
    expected = _EXPECTED_LISTING.get((action, outcome))
    if expected is None:
        return
    which, listed = expected
    if (fingerprint in mokutil.fingerprints(which)) != listed:
        raise MokRequestError("mokutil --%s exited without an error, but the request is not staged: mokutil "
                              "--list-%s %s SHA1 %s afterwards (the firmware did not keep the variable?)"
                              % (action, which, "does not list" if listed else "still lists", fingerprint),
                              path, done)


def apply(mokutil, path, actions, password=None, ignore_keyring=False, temp_dir=None, fingerprint=None):
    # type: (Mokutil, str, List[Action], Optional[str], bool, Optional[str], Optional[str]) -> List[str]
    """Run ``actions``; returns what mokutil did for each. The password hash lives in a 0600
    temporary file only while mokutil reads it; the password itself goes through stdin only.
    A failure is a MokRequestError that lists what was done before it."""
    fingerprint = fingerprint or sha1_fingerprint(read_certificate(path))
    done = []  # type: List[str]
    for action in actions:
        try:
            done.append(_apply_one(mokutil, path, action, password, ignore_keyring, temp_dir, fingerprint))
        except MokRequestError:
            raise
        except ModSignError as exc:
            raise MokRequestError(exc.cause, exc.path, done)
        if done[-1].endswith(": requested") or done[-1].endswith(": cancelled"):
            name, outcome = done[-1].split(": ")
            confirm_request(mokutil, name, outcome, fingerprint, path, done)
    return done


def _apply_one(mokutil, path, action, password, ignore_keyring, temp_dir, fingerprint):
    # type: (Mokutil, str, Action, Optional[str], bool, Optional[str], str) -> str
    if action.name in ("import", "delete"):
        if password is None:
            raise ModSignError("a MOK password is needed to %s the certificate" % action.name)
        with hash_file(mokutil.password_hash(password), temp_dir) as name:
            return "%s: %s" % (action.name, mokutil.request(action.name, path, name, ignore_keyring))
    if action.name == "timeout":
        mokutil.set_timeout(action.value or 0)
        return "timeout: %d" % (action.value or 0)
    if password is None:
        raise ModSignError("a MOK password is needed to change MOK trust")
    mokutil.set_trust(action.name == "trust_mok", password)
    return action.name


class hash_file(object):
    """A 0600 temporary file holding a password hash, removed on exit whatever happens."""

    def __init__(self, crypt_line, temp_dir=None):
        # type: (str, Optional[str]) -> None
        self.crypt_line = crypt_line
        self.temp_dir = temp_dir
        self.name = None  # type: Optional[str]

    def __enter__(self):
        # type: () -> str
        fd, self.name = tempfile.mkstemp(prefix=".skm-mok-", dir=self.temp_dir)  # mkstemp: 0600
        try:
            os.write(fd, self.crypt_line.encode("ascii"))  # no newline: mokutil wants a bare string
        finally:
            os.close(fd)
        return self.name

    def __exit__(self, *exc):
        if self.name:
            try:
                os.unlink(self.name)
            except OSError:
                pass
        return False


def reboot_required(status):
    # type: (MokStatus) -> bool
    return status.state in (PENDING, PENDING_DELETE) or status.trust_mok_pending


def console_steps(status, password_hint="the MOK password given to this task"):
    # type: (MokStatus, str) -> List[str]
    """What the person at the console will see in shim's MokManager after the next reboot."""
    if not reboot_required(status):
        return []
    wait = ("wait: the prompt stays until a key is pressed" if status.timeout < 0
            else "within %d seconds, or the boot continues and nothing changes" % status.timeout)
    steps = ["Reboot. Shim shows a blue screen 'Shim UEFI key management' with 'Press any key to perform "
             "MOK management' - press a key (%s)." % wait]
    actions = {PENDING: ("Enroll MOK", "Enroll"), PENDING_DELETE: ("Delete MOK", "Delete")}
    if status.state in actions:
        menu, verb = actions[status.state]
        steps += ["Choose '%s'." % menu,
                  "Choose 'View key 0' and check the fingerprint %s (%s), then 'Continue'."
                  % (status.fingerprint, status.subject),
                  "At '%s the key(s)?' choose 'Yes'." % verb,
                  "Type %s at the 'Password:' prompt." % password_hint]
    if status.trust_mok_pending:
        steps += ["Choose the MOK trust entry (shim's 'Enable/Disable MOK trust' request), answer 'Yes', and "
                  "type the characters of the password it asks for."]
    steps.append("Choose 'Reboot'. Only after this reboot does the kernel see the change "
                 "(mokutil --test-key then says 'is already enrolled' or 'is not enrolled').")
    return steps
