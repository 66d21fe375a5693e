"""The MokManager dialogue driver (plugins/module_utils/_mokmanager.py) against recorded REAL screens.

The recordings in captured_mokmanager/ are the serial console of Debian's shim MokManager in the Secure Boot
VM of tests/secureboot (make test-secureboot rewrites them), with the password masked at recording time.
Replaying checks the driver presses exactly the keys the real run needed, and reads what the real screens
said; the cases where the firmware answers differently (wrong password, mismatch) are their own real runs.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _mokmanager as mm
from tests.secureboot import replay

CAPTURED = pathlib.Path(__file__).resolve().parent / "captured_mokmanager"
PASSWORD = "unit-test-password-1"
FAST = dict(countdown_timeout=0.5, screen_timeout=0.5, key_delay=0)


def recording(case):
    return replay.load(CAPTURED / f"{case}.json")


def shown_in(record):
    """The fingerprint the real key view showed, read with the driver's own parser from the raw screens."""
    raw = b"".join(data for _when, way, data in record["events"] if way == "out")
    return mm.shown_fingerprint(mm.plain_text(raw))


def dialogue(events, expected, stop_after=None, **options):
    console = replay.ReplayConsole(events, stop_after=stop_after)
    return console, mm.Dialogue(console, options.pop("password", PASSWORD), expected, **dict(FAST, **options))


def assert_no_password(text):
    assert PASSWORD not in text
    for secret in ("skm-test-0ne-time", "not-the-password"):   # the real runs' passwords
        assert secret not in text


def test_recordings_hold_no_password():
    for path in CAPTURED.glob("*.json"):
        assert_no_password(path.read_text())
        events = json.loads(path.read_text())["events"]
        assert any(way == "in" and data == "********" for _when, way, data in events) or "mismatch" in path.name


def test_key_view_fingerprint_is_sha1_of_the_staged_certificate():
    record = recording("enroll")
    assert shown_in(record) == mm.normalize_fingerprint(record["staged_sha1"])


def test_enrolls_with_the_recorded_screens():
    record = recording("enroll")
    console, driver = dialogue(record["events"], [record["staged_sha1"]])
    result = driver.run()
    assert result["enrolled"] is True
    assert result["fingerprint"] == mm.normalize_fingerprint(record["staged_sha1"])
    assert result["screens"][:3] == ["countdown", "Perform MOK management", "Perform MOK management -> Enroll MOK"]
    assert console.at == len(record["events"]), "the driver stopped before the recorded run did"
    assert "<<password>>" in result["transcript"] and "Enroll the key(s)?" in result["transcript"]
    assert_no_password(result["transcript"])


def test_fingerprint_mismatch_declines_and_names_the_screen():
    record = recording("fingerprint_mismatch")
    console, driver = dialogue(record["events"], ["00" * 20])
    with pytest.raises(mm.MokManagerError) as caught:
        driver.run()
    error = caught.value
    assert error.declined and not error.enrolled
    assert error.screen == "View key 0"
    assert "refused: MokManager shows fingerprint %s" % shown_in(record) in str(error)
    assert "nothing was enrolled" in str(error)
    assert "Enroll the key(s)?" in error.transcript and "Fingerprint" in error.transcript
    assert "<<password>>" not in error.transcript, "a refused key must never get the password"
    assert_no_password(str(error) + error.transcript)


def test_a_right_password_is_never_typed_for_a_wrong_key():
    """The enrollment recording, replayed to a driver that expects another key: it must leave the script
    (press No) instead of following the recorded Yes + password."""
    record = recording("enroll")
    console, driver = dialogue(record["events"], ["11" * 20])
    with pytest.raises((replay.ReplayDiverged, mm.MokManagerError)):
        driver.run()
    sent = [data for _when, way, data in driver.transcript.events if way == "in"]
    assert b"********" not in sent


def test_wrong_password_fails_after_the_retries():
    record = recording("wrong_password")
    console, driver = dialogue(record["events"], [record["staged_sha1"]], password_attempts=3)
    with pytest.raises(mm.MokManagerError) as caught:
        driver.run()
    error = caught.value
    assert not error.enrolled and not error.declined
    assert error.screen == "Password"
    assert "did not accept the password" in str(error) and "dropped the request" in str(error)
    # MokManager's own retries: three "ERROR / Password doesn't match / OK" boxes, then "Failed to enroll keys".
    assert error.transcript.count("<<password>>") == 3
    assert error.transcript.count("Password doesn't match") >= 3
    assert "Failed to enroll keys" in error.transcript
    assert driver.screens[-1] == "Perform MOK management -> Continue boot"
    assert_no_password(str(error) + error.transcript)


def test_timeout_after_the_blue_screen():
    """The console goes silent after the countdown (a dropped SOL session, a hung firmware)."""
    record = recording("enroll")
    first_key = next(i for i, (_when, way, _data) in enumerate(record["events"]) if way == "in")
    console, driver = dialogue(record["events"], [record["staged_sha1"]], stop_after=first_key + 1)
    with pytest.raises(mm.MokManagerError) as caught:
        driver.run()
    assert caught.value.screen == "Perform MOK management"
    assert "not shown within 0.5s" in str(caught.value)
    assert "Press any key to perform MOK management" in caught.value.transcript
    assert_no_password(str(caught.value) + caught.value.transcript)


def test_no_countdown_at_all():
    console, driver = dialogue([], ["00" * 20])
    with pytest.raises(mm.MokManagerError) as caught:
        driver.run()
    assert caught.value.screen == "countdown" and "Press any key" in str(caught.value)


@pytest.mark.parametrize("bad", ["", "abc", "00" * 19, "zz" * 20])
def test_bad_expected_fingerprint_is_refused_before_any_key(bad):
    with pytest.raises(ValueError):
        mm.Dialogue(replay.ReplayConsole([]), PASSWORD, [bad])


def test_empty_password_is_refused():
    with pytest.raises(ValueError):
        mm.Dialogue(replay.ReplayConsole([]), "", ["00" * 20])
