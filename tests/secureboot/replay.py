"""Recorded MokManager console sessions: save one from a real run, replay it to the dialogue driver.

A recording (tests/unit/captured_mokmanager/<case>.json) is the console as the driver saw it: the bytes
the firmware sent ("out", ANSI and all, as latin-1 text) and the keys the driver sent ("in"), in order,
with the password already masked ("********"). Replaying releases each "out" chunk once every "in" before
it has been sent again by the driver under test, so a driver that presses other keys than the recorded run
is caught (ReplayDiverged) instead of being fed screens that would not have followed.
"""

from __future__ import annotations

import json
import pathlib
import time

MASK = b"********"


class ReplayDiverged(AssertionError):
    pass


def save(path: pathlib.Path, events, **about) -> None:
    """Write ``events`` ((seconds, "out"|"in", bytes), from Transcript.events) with notes about the run."""
    record = dict(about, events=[[t, way, data.decode("latin-1")] for t, way, data in events])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=0) + "\n")


def load(path: pathlib.Path) -> dict:
    record = json.loads(path.read_text())
    record["events"] = [(t, way, data.encode("latin-1")) for t, way, data in record["events"]]
    return record


class ReplayConsole:
    """A console that answers like the recorded one; ``stop_after`` cuts the recording (a silent console)."""

    def __init__(self, events, stop_after: int | None = None):
        self.events = list(events)[:stop_after] if stop_after is not None else list(events)
        self.at = 0
        self.pending = b""      # what the driver sent that no recorded "in" has matched yet
        self.closed_at_end = False

    def _next_in(self) -> bytes:
        return self.events[self.at][2]

    def send(self, data: bytes) -> None:
        self.pending += data
        while self.at < len(self.events) and self.events[self.at][1] == "in" and self.pending:
            want = self._next_in()
            if want == MASK:            # a password: any characters, then Enter
                if b"\r" not in self.pending:
                    return
                self.pending = self.pending.split(b"\r", 1)[1]
            elif self.pending.startswith(want):
                self.pending = self.pending[len(want):]
            elif want.startswith(self.pending):
                return
            else:
                raise ReplayDiverged(f"event {self.at}: the driver sent {self.pending!r}, the recorded run {want!r}")
            self.at += 1
        if self.pending and self.at >= len(self.events):
            self.pending = b""          # keys into a console that has gone silent

    def read(self, timeout: float) -> bytes:
        if self.pending and self.at < len(self.events) and self.events[self.at][1] == "in":
            self.send(b"")          # keys that came early (before the screen they answer was replayed)
        if self.at < len(self.events) and self.events[self.at][1] == "out":
            self.at += 1
            return self.events[self.at - 1][2]
        if self.at >= len(self.events) and self.closed_at_end:
            raise EOFError()
        time.sleep(min(timeout, 0.01))
        return b""


def serve_stdio(path: pathlib.Path) -> int:
    """Be the console command: replay ``path`` on stdout, answering the keys read from stdin.

    A driver that leaves the recorded script gets the rest of the console silent (as a hung or disconnected
    console would be) and the divergence on stderr; the process ends when stdin closes."""
    import os
    import sys
    console = ReplayConsole(load(path)["events"])
    while True:
        try:
            data = console.read(0)
        except ReplayDiverged as exc:
            sys.stderr.write(f"replay: {exc}\n")
            console.events = console.events[:console.at]
            continue
        if data:
            os.write(1, data)
            continue
        try:
            keys = os.read(0, 4096)
        except OSError:
            return 0
        if not keys:
            return 0
        try:
            console.send(keys)
        except ReplayDiverged as exc:
            sys.stderr.write(f"replay: {exc}\n")
            console.events = console.events[:console.at]


if __name__ == "__main__":
    import sys
    sys.exit(serve_stdio(pathlib.Path(sys.argv[1])))
