# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Confirm a staged MOK enrollment at shim's MokManager over a serial console, with no one at the keyboard.

Private to skm.modsign: other collections must not import it. Controller-side: the console is a command
the user gives (``ipmitool ... sol activate``, ``virsh console NAME``, ``socat - UNIX-CONNECT:PATH``) run
under pexpect on the controller, or any object with ``read(timeout) -> bytes`` and ``send(bytes)``.

The screens followed (shim 15.x/16.x MokManager on a UEFI serial terminal, recorded in
tests/unit/captured_mokmanager/):
  countdown     "Press any key to perform MOK management" (MokTimeout seconds, 10 by default; when it
                runs out shim boots on)
  main menu     "Perform MOK management": Continue boot / Enroll MOK / Enroll key from disk / ...
  enroll menu   "[Enroll MOK]": View key 0 [/ View key 1 ...] / Continue
  key view      the certificate's details and its "Fingerprint (SHA1)" bytes; any key returns
  confirm       "Enroll the key(s)?": No / Yes
  password      "Password:"; a wrong one: an "ERROR / Password doesn't match / OK" box, Enter, the prompt
                again; after the third, "Failed to enroll keys / OK", then the menu
  done          "Perform MOK management" again, now with "Reboot" first
Menus are driven with the arrow keys (VT100 ESC [ A / ESC [ B) and Enter; a menu starts at its first item
and does not wrap, so "go to item N" is: Up as many times as there are items, then Down N times.

Safety rules: the fingerprint MokManager shows must equal the staged certificate's, or the enrollment is
declined at "Enroll the key(s)?" (No) and the host boots on (MokManager then drops the request: seen with
Debian's shim 16.1, mokutil --list-new is empty afterwards); the password is typed only at the password
prompt and never appears in the transcript (masked as ``********``), in errors or in results.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import re
import time

MASK = "********"
KEY_UP = b"\x1b[A"
KEY_DOWN = b"\x1b[B"
KEY_ENTER = b"\r"
ANY_KEY = b" "

# Screen texts (after ANSI sequences are removed).
COUNTDOWN = "Press any key to perform MOK management"
MAIN_MENU_TITLE = "Perform MOK management"
# The serial line can drop bytes under load (seen: a title cut to "Perform MOK  ma"): the main menu is
# recognised by its title or by the items only it has.
MAIN_MENU_LAST = re.compile(r"hash from disk")  # the last item of the main menu, before and after enrolling
MAIN_MENU = re.compile(r"Perform MOK|Continue boot|Reboot|Enroll key from disk|Enroll hash from disk")
ENROLL_MENU = re.compile(r"\[Enroll MOK\]|View key \d")  # its title, or its items when the title was lost
CONFIRM = "Enroll the key(s)?"
PASSWORD_PROMPT = re.compile(r"Password(?:\(\d+-\d+ characters\))?:")
PASSWORD_MISMATCH = "Password doesn't match"
# The box MokManager shows for a wrong password; its message line can be lost on the wire, its title stays.
ERROR_BOX = re.compile(r"\bERROR\b|Password doesn't match")
ENROLL_FAILED = re.compile(r"Failed to enroll keys|Password limit reached|[Tt]oo many")
LINUX_BOOTING = re.compile(r"Linux version \d|login: *$|EFI stub: ")

ANSI = re.compile(rb"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[@-Z\\-_])")
CURSOR_MOVE = re.compile(rb"\x1b\[[0-9;]*[Hf]")
HEX_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{2}(?![0-9A-Za-z])")


class MokManagerError(Exception):
    """A dialogue that stopped: ``screen`` names where, ``transcript`` is the console (password masked)."""

    def __init__(self, message, screen, transcript, enrolled=False, declined=False):
        # type: (str, str, str, bool, bool) -> None
        super(MokManagerError, self).__init__("MokManager, screen '%s': %s" % (screen, message))
        self.screen = screen
        self.transcript = transcript
        self.enrolled = enrolled
        self.declined = declined


def plain_text(raw):
    # type: (bytes) -> str
    """What a person sees in ``raw`` console bytes, roughly: ANSI sequences dropped, boxes kept as text."""
    text = ANSI.sub(b"", CURSOR_MOVE.sub(b"\n", raw)).replace(b"\r", b"").decode("latin-1")
    return "".join(ch if (ch.isprintable() or ch == "\n") else " " for ch in text)


def fingerprints(der):
    # type: (bytes) -> dict
    """The digests MokManager may show for a DER certificate (SHA1 in shim 15+, SHA256 in older shims)."""
    return {"sha1": hashlib.sha1(der).hexdigest(),  # nosec - an identifier, as MokManager shows it
            "sha256": hashlib.sha256(der).hexdigest()}


def normalize_fingerprint(text):
    # type: (str) -> str
    """``AB:cd ...`` -> ``abcd...``; refuses what is not 20 or 32 bytes of hex."""
    digits = re.sub(r"[\s:]", "", text or "").lower()
    if not re.match(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$", digits):
        raise ValueError("not a SHA1 or SHA256 fingerprint (hex, optionally colon-separated): %r" % text)
    return digits


def shown_fingerprint(screen_text):
    # type: (str) -> str
    """The fingerprint in a MokManager key view, or ''.

    The bytes follow "Fingerprint (SHA1):" (SHA256 in old shims), a few per line, possibly with box borders
    between the lines: the first 20 (32) two-digit hex tokens after the heading are the fingerprint."""
    at = screen_text.rfind("Fingerprint")
    if at < 0:
        return ""
    size = 32 if "SHA256" in screen_text[at:at + 40] else 20
    tokens = HEX_TOKEN.findall(screen_text[at + len("Fingerprint"):at + 2000])
    return "".join(tokens[:size]).lower() if len(tokens) >= size else ""


class Transcript:
    """Console bytes both ways, with the password masked wherever it could appear."""

    def __init__(self, secrets=()):
        self.events = []  # type: list
        self._secrets = [s.encode("utf-8") for s in secrets if s]
        self.started = time.monotonic()

    def mask(self, data):
        # type: (bytes) -> bytes
        for secret in self._secrets:
            data = data.replace(secret, MASK.encode())
        return data

    def output(self, data):
        # type: (bytes) -> None
        if data:
            self.events.append((round(time.monotonic() - self.started, 2), "out", self.mask(data)))

    def sent(self, data, secret=False):
        # type: (bytes, bool) -> None
        self.events.append((round(time.monotonic() - self.started, 2), "in", MASK.encode() if secret
                            else self.mask(data)))

    def raw_output(self):
        # type: () -> bytes
        return b"".join(data for _when, way, data in self.events if way == "out")

    def text(self, tail=None):
        # type: (int) -> str
        """A readable transcript: console text, with each key we sent shown as ``<<key>>``."""
        parts = []
        for _when, way, data in self.events:
            parts.append(plain_text(data) if way == "out" else "<<%s>>" % describe_key(data))
        text = "".join(parts)
        return text[-tail:] if tail else text


def describe_key(data):
    # type: (bytes) -> str
    names = {KEY_UP: "Up", KEY_DOWN: "Down", KEY_ENTER: "Enter", ANY_KEY: "Space", MASK.encode(): "password"}
    return names.get(data, data.decode("latin-1"))


class Dialogue:
    """One enrollment confirmation at MokManager (see the module docstring for the screens)."""

    def __init__(self, console, password, expected_fingerprints, countdown_timeout=600.0, screen_timeout=60.0,
                 key_delay=0.3, password_attempts=1, confirm_reboot=True):
        # type: (object, str, list, float, float, float, int, bool) -> None
        if not password:
            raise ValueError("the MOK password is empty")
        self.console = console
        self._password = password
        self.expected = [normalize_fingerprint(f) for f in expected_fingerprints]
        if not self.expected:
            raise ValueError("no expected fingerprint: give the staged certificate or its fingerprint")
        self.countdown_timeout = countdown_timeout
        self.screen_timeout = screen_timeout
        self.key_delay = key_delay
        self.password_attempts = max(1, min(3, password_attempts))
        self.confirm_reboot = confirm_reboot
        self.transcript = Transcript([password])
        self.screens = []  # type: list
        self._raw = b""
        self._mark = 0
        self._current = "countdown"

    # -- console plumbing ---------------------------------------------------------------------------
    def _pump(self, timeout):
        # type: (float) -> bool
        try:
            data = self.console.read(timeout)
        except EOFError:
            raise self._fail("the console command ended (EOF)", self._current)
        if data:
            self.transcript.output(data)
            self._raw += self.transcript.mask(data)
        return bool(data)

    def _text(self):
        # type: () -> str
        return plain_text(self._raw[self._mark:])

    def _send(self, data, secret=False):
        # type: (bytes, bool) -> None
        self._mark = len(self._raw)  # what follows a key is read from here on
        self.transcript.sent(data, secret)
        self.console.send(data)
        self._settle(self.key_delay)

    def _settle(self, quiet):
        # type: (float) -> None
        """Read until the console has been quiet for ``quiet`` seconds (a screen finished drawing)."""
        while self._pump(max(quiet, 0.001)):
            pass

    def _wait_for(self, screen, patterns, timeout, also=()):
        # type: (str, list, float, tuple) -> tuple
        """Read until one of ``patterns`` (or ``also``) shows after the mark; returns (index, text)."""
        self._current = screen
        deadline = time.monotonic() + timeout
        everything = list(patterns) + list(also)
        while True:
            text = self._text()
            hits = [(found.start(), i) for i, found in enumerate(_search(p, text) for p in everything) if found]
            if hits:
                return min(hits)[1], text
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail("not shown within %gs (waiting for %s)"
                                 % (timeout, " or ".join(repr(_pattern_text(p)) for p in patterns)), screen)
            self._pump(min(left, 1.0))

    def _enter_screen(self, screen):
        # type: (str) -> None
        self.screens.append(screen)

    def _fail(self, message, screen, **flags):
        return MokManagerError(message, screen, self.transcript.text(), **flags)

    def _choose(self, screen, items, wanted):
        # type: (str, list, str) -> None
        """Move the highlight to ``wanted`` in a menu showing ``items`` (top first) and press Enter."""
        if wanted not in items:
            raise self._fail("no '%s' in the menu (items seen: %s)" % (wanted, ", ".join(items) or "none"), screen)
        for _item in items:
            self._send(KEY_UP)
        for _step in range(items.index(wanted)):
            self._send(KEY_DOWN)
        self._enter_screen(screen + " -> " + wanted)
        self._send(KEY_ENTER)

    def _menu(self, screen, title, candidates, timeout, last=None):
        # type: (str, str, list, float, str) -> list
        """Wait for a menu titled ``title`` (and its item ``last``, drawn last); return the items seen, in
        screen order. Under load the firmware can pause for seconds between the title and the items."""
        self._wait_for(screen, [title], timeout)
        if last:
            self._wait_for(screen, [last], timeout)
        self._settle(self.key_delay * 3)  # let the whole menu draw
        text = self._text()
        start = _search(title, text).start()
        found = sorted((text.find(item, start), item) for item in candidates if text.find(item, start) >= 0)
        return [item for _position, item in found]

    # -- the screens --------------------------------------------------------------------------------
    def run(self):
        # type: () -> dict
        self._current = "countdown"
        self._countdown()
        items = self._main_menu()
        self._choose("Perform MOK management", items, "Enroll MOK")
        shown = self._view_key()
        if shown not in self.expected:
            # A second look: a noisy serial line can garble a byte, but not turn another key into ours.
            shown = self._view_key()
        if shown not in self.expected:
            self._decline(shown)
        self._confirm()
        self._password_prompt()
        self._finish()
        return {"enrolled": True, "fingerprint": shown, "screens": list(self.screens),
                "transcript": self.transcript.text()}

    def _countdown(self):
        self._enter_screen("countdown")
        index, _match = self._wait_for("countdown", [COUNTDOWN], self.countdown_timeout, also=(LINUX_BOOTING,))
        if index:
            raise self._fail("the host booted on without MokManager: no MOK request is staged, or the countdown "
                             "ran out before the console was attached (nothing was enrolled)", "countdown")
        self._send(ANY_KEY)

    def _main_menu(self):
        self._enter_screen("Perform MOK management")
        items = self._menu("Perform MOK management", MAIN_MENU,
                           ["Continue boot", "Reboot", "Enroll MOK", "Delete MOK", "Enroll key from disk",
                            "Enroll hash from disk", "Change Secure Boot state"], self.screen_timeout,
                           last=MAIN_MENU_LAST)
        if "Enroll MOK" not in items:
            raise self._fail("MokManager offers no 'Enroll MOK': no enrollment request is staged (items: %s)"
                             % ", ".join(items), "Perform MOK management")
        return items

    def _enroll_menu(self):
        # type: () -> list
        items = self._menu("[Enroll MOK]", ENROLL_MENU, ["View key %d" % i for i in range(8)] + ["Continue"],
                           self.screen_timeout, last=re.compile(r"View key \d+[^\n]*\n(?:.*\n)*?.*Continue"))
        if "View key 0" not in items or "Continue" not in items:
            raise self._fail("expected 'View key 0' and 'Continue' (items: %s)" % ", ".join(items), "[Enroll MOK]")
        if len(items) > 2:
            raise self._fail("%d keys are staged; this confirms exactly one (nothing was enrolled)"
                             % (len(items) - 1), "[Enroll MOK]")
        return items

    def _view_key(self):
        # type: () -> str
        self._choose("[Enroll MOK]", self._enroll_menu(), "View key 0")
        self._wait_for("View key 0", ["Fingerprint"], self.screen_timeout)
        self._settle(self.key_delay * 3)
        shown = shown_fingerprint(self._text())
        if not shown:
            raise self._fail("no fingerprint could be read from the key view", "View key 0")
        self._enter_screen("[Enroll MOK]")
        self._send(ANY_KEY)
        return shown

    def _decline(self, shown):
        # type: (str) -> None
        """The key shown is not ours: answer No at the confirmation, boot on, and say so."""
        message = ("refused: MokManager shows fingerprint %s, expected %s. Declined at 'Enroll the key(s)?' "
                   "(No); nothing was enrolled" % (shown, " or ".join(self.expected)))
        try:
            self._choose("[Enroll MOK]", self._enroll_menu(), "Continue")
            self._choose("Enroll the key(s)?", self._menu("Enroll the key(s)?", CONFIRM, ["No", "Yes"],
                                                          self.screen_timeout, last="Yes"), "No")
            self._boot_on("Perform MOK management")
        except MokManagerError as exc:
            raise self._fail(message + "; then the console stopped answering (%s): check the host's console"
                             % exc, "View key 0", declined=True)
        raise self._fail(message + "; the host boots on, and MokManager has dropped the request (stage it again "
                         "once the right certificate is known)", "View key 0", declined=True)

    def _confirm(self):
        self._choose("[Enroll MOK]", self._enroll_menu(), "Continue")
        self._enter_screen("Enroll the key(s)?")
        items = self._menu("Enroll the key(s)?", CONFIRM, ["No", "Yes"], self.screen_timeout, last="Yes")
        self._choose("Enroll the key(s)?", items, "Yes")

    def _password_prompt(self):
        self._enter_screen("Password")
        self._wait_for("Password", [PASSWORD_PROMPT], self.screen_timeout)
        for attempt in range(1, self.password_attempts + 1):
            self._enter_screen("Password (attempt %d)" % attempt)
            self._send_password()
            outcome = self._after_password("Password (attempt %d)" % attempt)
            if outcome == "enrolled":
                return
            if outcome == "failed":
                break
        self._give_up_password()

    def _after_password(self, screen):
        # type: (str) -> str
        """'enrolled' (back at the menu), 'retry' (asked again) or 'failed' (MokManager gave up).

        A wrong password shows an "ERROR / Password doesn't match / OK" box: Enter on OK brings the prompt back,
        after the third the "Failed to enroll keys / OK" box follows (recorded in captured_mokmanager/)."""
        outcomes = [MAIN_MENU, PASSWORD_PROMPT, ENROLL_FAILED]
        index, _match = self._wait_for(screen, outcomes, self.screen_timeout, also=(ERROR_BOX,))
        if index == 3:
            self._settle(self.key_delay * 3)
            self._send(KEY_ENTER)  # OK
            index, _match = self._wait_for(screen, outcomes, self.screen_timeout)
        return ("enrolled", "retry", "failed")[index]

    def _send_password(self):
        self._mark = len(self._raw)
        self.transcript.sent(b"", secret=True)
        for char in self._password:
            self.console.send(char.encode("utf-8"))
            time.sleep(0.02)
        self.console.send(KEY_ENTER)
        self._settle(self.key_delay)

    def _give_up_password(self):
        """Stop guessing: a fixed wrong answer at each prompt that is left uses up MokManager's tries (Enter
        on each OK box); MokManager then returns to its menu and the host boots on."""
        message = "MokManager did not accept the password; nothing was enrolled"
        try:
            for _attempt in range(8):
                index, _match = self._wait_for("Password", [MAIN_MENU, PASSWORD_PROMPT, ENROLL_FAILED, ERROR_BOX],
                                               self.screen_timeout)
                if index == 0:
                    break
                if index == 1:
                    self._send(b"-" + KEY_ENTER)
                else:
                    self._send(KEY_ENTER)  # OK on "Password doesn't match" / "Failed to enroll keys"
            self._boot_on("Perform MOK management")
        except MokManagerError as exc:
            raise self._fail(message + "; then the console stopped answering (%s)" % exc, "Password")
        raise self._fail(message + " (wrong one-time password?); the host boots on, and MokManager has dropped "
                         "the request (stage it again with the right password)", "Password")

    def _boot_on(self, screen):
        # type: (str) -> None
        self._enter_screen(screen)
        items = self._menu(screen, MAIN_MENU, ["Continue boot", "Reboot", "Enroll MOK", "Enroll key from disk",
                                               "Enroll hash from disk"], self.screen_timeout, last=MAIN_MENU_LAST)
        self._choose(screen, items, "Reboot" if "Reboot" in items else "Continue boot")

    def _finish(self):
        screen = "Perform MOK management (after enrolling)"
        self._enter_screen(screen)
        items = self._menu(screen, MAIN_MENU, ["Reboot", "Continue boot", "Enroll MOK", "Enroll key from disk",
                                               "Enroll hash from disk"], self.screen_timeout, last=MAIN_MENU_LAST)
        if "Enroll MOK" in items or "Continue boot" in items:
            raise self._fail("enrollment not confirmed: the menu still offers %s" % ", ".join(items), screen)
        if self.confirm_reboot:
            # "Reboot" replaces "Continue boot" at the top once a key is enrolled; its text can be lost on a noisy
            # line, the request's "Enroll MOK" being gone says the same, so the top item is chosen.
            self._choose(screen, ["Reboot"] + [item for item in items if item != "Reboot"], "Reboot")


def _search(pattern, text):
    if hasattr(pattern, "search"):
        return pattern.search(text)
    at = text.find(pattern)
    return _Found(at) if at >= 0 else None


class _Found:
    def __init__(self, at):
        self._at = at

    def start(self):
        return self._at


def _pattern_text(pattern):
    return getattr(pattern, "pattern", pattern)


class CommandConsole:
    """A console reached by running ``argv`` under a pseudo-terminal (pexpect)."""

    def __init__(self, argv, pexpect_module=None):
        # type: (list, object) -> None
        if pexpect_module is None:
            import pexpect as pexpect_module  # controller-side only; the caller reports a missing library
        self._pexpect = pexpect_module
        self.child = pexpect_module.spawn(argv[0], list(argv[1:]), timeout=None, echo=False)
        # Raw: keys must reach the console byte for byte (no line buffering, no CR -> LF).
        import tty
        tty.setraw(self.child.child_fd)

    def read(self, timeout):
        # type: (float) -> bytes
        try:
            return self.child.read_nonblocking(65536, timeout=timeout)
        except self._pexpect.TIMEOUT:
            return b""
        except self._pexpect.EOF:
            raise EOFError()

    def send(self, data):
        # type: (bytes) -> None
        self.child.send(data)

    def close(self):
        self.child.close(force=True)
