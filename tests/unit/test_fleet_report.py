"""The fleet report's document and HTML page (plugins/plugin_utils/_fleet_report.py, the report role's filters).

The browser half (headless chromium: DOM after a filter click, sorting, detail view, screenshot, 1,000 hosts)
is tests/runtime/test_report_browser.py in make test-runtime.
"""

from __future__ import annotations

import html.parser
import json
import re
import time

from ansible_collections.skm.modsign.plugins.filter.fleet_report import FilterModule
from ansible_collections.skm.modsign.plugins.plugin_utils import _fleet_report as fr
from tests.lib.fleet_sample import small_fleet, synthetic_fleet


class Page(html.parser.HTMLParser):
    """Counts what the page is made of (and what it would fetch)."""

    def __init__(self):
        super().__init__()
        self.rows, self.fetches, self.tags, self.rects = [], [], set(), 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "tr" and "host" in (attrs.get("class") or "").split():
            self.rows.append(attrs)
        if tag == "rect":
            self.rects += 1
        for name in ("src", "href"):
            if attrs.get(name):
                self.fetches.append(attrs[name])
        if tag == "link":
            self.fetches.append(attrs.get("href"))


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    return p


def test_the_document_is_versioned_typed_and_sorted():
    doc = fr.fleet_report(small_fleet())
    assert doc["schema"] == "skm.modsign/fleet-report" and doc["schema_version"] == 2
    assert [h["host"] for h in doc["hosts"]] == sorted(h["host"] for h in doc["hosts"])
    db = next(h for h in doc["hosts"] if h["host"] == "db-01")
    assert db["modules_unsigned"] == 2 and db["enforce_configured"] is False and db["status"] == "attention"
    assert any("refused by the gate" in r for r in db["attention"])
    assert doc["totals"]["hosts"] == 12 and doc["totals"]["mok_pending"] == 2
    assert json.loads(json.dumps(doc)) == doc


def test_attention_comes_from_the_audit_the_gate_mok_and_the_running_kernel():
    doc = fr.fleet_report(small_fleet())
    state = {h["host"]: h["status"] for h in doc["hosts"]}
    assert state["web-01"] == "ok"
    assert state["db-02"] == "attention" and state["edge-01"] == "attention" and state["gpu-01"] == "attention"
    build = next(h for h in doc["hosts"] if h["host"] == "build-01")
    assert build["status"] == "attention" and any(r.startswith("running kernel:") for r in build["attention"])
    assert doc["totals"]["attention"] == sum(1 for h in doc["hosts"] if h["attention"])


def test_the_page_is_one_file_with_every_host_and_no_external_asset():
    doc = fr.fleet_report(small_fleet())
    page = fr.fleet_report_html(doc)
    p = parse(page)
    assert len(p.rows) == 12 and p.fetches == []
    assert "svg" in p.tags and p.rects >= 6 and "script" in p.tags and "style" in p.tags
    assert re.findall(r"https?://", page) == ["http://"]   # the SVG namespace only, never fetched
    assert sum(1 for r in p.rows if "attention" in r["class"].split()) == doc["totals"]["attention"]


def test_a_hostile_host_name_is_text_never_markup():
    page = fr.fleet_report_html(fr.fleet_report(small_fleet()))
    assert "<b>odd-host</b>" not in page and "&lt;b&gt;odd-host&lt;/b&gt;" in page
    data = page.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and json.loads(data)["hosts"][0]["host"] == "<b>odd-host</b>"


def test_the_filters_are_what_the_role_calls():
    filters = FilterModule().filters()
    doc = filters["skm_fleet_report"](small_fleet())
    assert filters["skm_fleet_report_html"](doc).startswith("<!DOCTYPE html>")


def test_a_thousand_hosts_render_in_well_under_a_second():
    rows = synthetic_fleet(1000)
    started = time.perf_counter()
    page = fr.fleet_report_html(fr.fleet_report(rows))
    seconds = time.perf_counter() - started
    assert len(parse(page).rows) == 1000
    assert seconds < 2.0, seconds
