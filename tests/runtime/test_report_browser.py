"""The fleet report's HTML page in a real browser: Debian's chromium, headless (make test-runtime).

chromium loads the file from disk (no server, no network), runs the page's script and prints the DOM
(--dump-dom). The URL hash scripts the clicks (#attention clicks the filter box, #sort=... a column
header, #host=... a row), so the assertions are on the DOM the page made after them. A screenshot
goes to tmp, and to docs/fleet-report.png with SKM_REPORT_SCREENSHOT=1. The 1,000-host case prints
how long generating and opening took (chromium's start included; data-ready-ms is the page's own script).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest

from ansible_collections.skm.modsign.plugins.plugin_utils import _fleet_report as fr
from tests.lib.fleet_sample import small_fleet, synthetic_fleet

CHROMIUM = shutil.which("chromium")
DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--hide-scrollbars", "--mute-audio", "--disable-background-networking"]


def chromium(*args, timeout=180) -> str:
    proc = subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def dom(page: pathlib.Path, fragment: str = "") -> str:
    return chromium("--dump-dom", page.as_uri() + fragment)


def visible_hosts(text: str) -> list[str]:
    rows = re.findall(r'<tr class="host[^"]*"([^>]*)>(.*?)</tr>', text, re.S)
    return [re.search(r'<td data-k="host">(.*?)</td>', cells).group(1) for attrs, cells in rows if "hidden" not in attrs]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    doc = fr.fleet_report(small_fleet())
    path = tmp_path_factory.mktemp("report") / "fleet-report.html"
    path.write_text(fr.fleet_report_html(doc))
    return path, doc


def test_every_host_is_a_row(page):
    path, doc = page
    text = dom(path)
    assert len(visible_hosts(text)) == len(doc["hosts"]) == 12
    assert "12 of 12 hosts shown" in text


def test_the_attention_filter_click_hides_the_fine_hosts(page):
    path, doc = page
    text = dom(path, "#attention")
    want = [h["host"] for h in doc["hosts"] if h["status"] == "attention"]
    assert visible_hosts(text) == want and len(want) == doc["totals"]["attention"]
    assert "%d of 12 hosts shown" % len(want) in text
    assert re.search(r'id="attention-filter"[^>]*>', text)


def test_a_header_click_sorts(page):
    path, _doc = page
    text = dom(path, "#sort=host:desc")
    hosts = visible_hosts(text)
    assert hosts[0] == "web-06" and hosts == sorted(hosts, key=str.lower, reverse=True)
    numeric = visible_hosts(dom(path, "#sort=modules_unsigned:desc"))
    assert numeric[0] == "db-01"


def test_the_detail_view_shows_the_running_kernels_evidence(page):
    path, _doc = page
    text = dom(path, "#host=build-01")
    detail = text.split('<section id="detail"', 1)[1].split("</section>", 1)[0]
    assert not detail.startswith(" hidden") and "build-01" in detail
    for heading in ("Needs attention because", "Keyrings", "Kernel messages since boot", "taint"):
        assert heading in detail
    assert re.search(r'<tr class="host attention sel"[^>]*>\s*<td data-k="host">build-01<', text)


def test_screenshot(page, tmp_path):
    path, _doc = page
    shot = tmp_path / "fleet-report.png"
    chromium("--window-size=1500,1000", "--screenshot=%s" % shot, path.as_uri() + "#host=build-01")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000
    if os.environ.get("SKM_REPORT_SCREENSHOT"):
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS / "fleet-report.png")


def test_a_thousand_hosts(tmp_path):
    started = time.perf_counter()
    doc = fr.fleet_report(synthetic_fleet(1000))
    text = fr.fleet_report_html(doc)
    generated = time.perf_counter() - started
    path = tmp_path / "fleet-report.html"
    path.write_text(text)
    started = time.perf_counter()
    out = dom(path, "#attention")
    opened = time.perf_counter() - started
    ready = float(re.search(r'data-ready-ms="([\d.]+)"', out).group(1))
    assert len(visible_hosts(out)) == doc["totals"]["attention"]
    print("\n1000 hosts: %d KB, generated in %.2f s, chromium start+load+filter %.1f s, page script %.0f ms"
          % (len(text) >> 10, generated, opened, ready))
    assert generated < 2 and ready < 2000
