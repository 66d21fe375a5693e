# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report: one row per host in, a versioned JSON document and a self-contained HTML page out.

Private to skm.modsign; runs on the controller (the report role's filter plugin), no Ansible imports.

The HTML page has no external asset (styles, script, chart and data are inline) and works offline:
- the host table is rendered here, so the page reads without JavaScript; the inline script adds
  sorting (click a column header), the "needs attention" filter and a per-host detail view;
- the URL hash drives the same controls, so a link (or a headless browser) can open a view:
  ``#attention`` clicks the filter, ``#host=<name>`` clicks that host's row, ``#sort=<column>`` (or
  ``<column>:desc``) clicks a header;
- the chart is inline SVG: modules of the fleet by signature, hosts by enforcement and MOK state.
Every value from a host is escaped here (HTML) or set with textContent by the script, never as markup.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html
import json
from typing import Any, Dict, List, Sequence

SCHEMA = "skm.modsign/fleet-report"
SCHEMA_VERSION = 2
_INT_FIELDS = ("modules_total", "modules_trusted", "modules_unsigned", "modules_foreign")
_TRUE = ("true", "yes", "1", "True")


def _int(value):
    # type: (Any) -> int
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _bool(value):
    # type: (Any) -> bool
    return value is True or str(value) in _TRUE


def attention_reasons(row):
    # type: (Dict[str, Any]) -> List[str]
    """Why a host needs a person: what the audit, the gate, MOK and the running kernel say."""
    reasons = []
    if row.get("audit_error"):
        reasons.append("audit failed: %s" % row["audit_error"])
    if row["modules_unsigned"]:
        reasons.append("%d unsigned module(s)" % row["modules_unsigned"])
    if row["modules_foreign"]:
        reasons.append("%d module(s) signed by a foreign key or with a bad signature" % row["modules_foreign"])
    if row.get("enforce_refused"):
        reasons.append("enforcement refused by the gate: %s" % row["enforce_refused"])
    if row.get("mok_state") == "pending":
        reasons.append("MOK enrollment waits for a person at the console")
    runtime = row.get("runtime") or {}
    verdict = runtime.get("verdict") or {}
    reasons.extend("running kernel: %s" % text for text in verdict.get("attention") or [])
    return reasons


def normalize_row(row):
    # type: (Dict[str, Any]) -> Dict[str, Any]
    """A row as the role composed it (Jinja makes strings of numbers), typed, with its attention reasons."""
    out = dict(row)
    for name in _INT_FIELDS:
        out[name] = _int(row.get(name))
    for name in ("enforce_configured", "enforce_active", "reboot_needed"):
        out[name] = _bool(row.get(name))
    out["runtime"] = runtime_summary(row.get("runtime") or {})
    out["attention"] = attention_reasons(out)
    out["status"] = "attention" if out["attention"] else (
        "unknown" if (out["runtime"].get("verdict") or {}).get("state") == "unknown" else "ok")
    return out


def fleet_report(rows):
    # type: (Sequence[Dict[str, Any]]) -> Dict[str, Any]
    """The JSON document (docs/fleet-report-schema.md): schema, version, totals, hosts sorted by name."""
    hosts = sorted((normalize_row(r) for r in rows), key=lambda r: str(r.get("host")))
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "totals": totals(hosts), "hosts": hosts}


def totals(hosts):
    # type: (Sequence[Dict[str, Any]]) -> Dict[str, int]
    return {
        "hosts": len(hosts),
        "attention": sum(1 for h in hosts if h["status"] == "attention"),
        "modules_trusted": sum(h["modules_trusted"] for h in hosts),
        "modules_foreign": sum(h["modules_foreign"] for h in hosts),
        "modules_unsigned": sum(h["modules_unsigned"] for h in hosts),
        "enforce_active": sum(1 for h in hosts if h["enforce_active"]),
        "enforce_configured": sum(1 for h in hosts if h["enforce_configured"] and not h["enforce_active"]),
        "enforce_off": sum(1 for h in hosts if not h["enforce_configured"]),
        "mok_pending": sum(1 for h in hosts if h.get("mok_state") == "pending"),
    }


# ---------------------------------------------------------------- HTML

COLUMNS = (  # (key, header, numeric)
    ("host", "host", False), ("status", "state", False), ("modules_trusted", "trusted", True),
    ("modules_total", "modules", True), ("modules_unsigned", "unsigned", True),
    ("modules_foreign", "foreign", True), ("kernel_trust", "kernel trusts our key", False),
    ("taint", "taint", False), ("mok_state", "MOK", False), ("enforce", "enforce", False),
)


def _cell_values(host):
    # type: (Dict[str, Any]) -> Dict[str, str]
    runtime = host.get("runtime") or {}
    trust = [c.get("trusted_for_modules") for c in runtime.get("certificates") or []]
    kernel_trust = "" if not runtime else ("yes" if trust and all(t is True for t in trust) else
                                           "no" if any(t is False for t in trust) else "unknown")
    taint = runtime.get("taint") or {}
    values = dict((key, str(host.get(key, ""))) for key, _h, _n in COLUMNS)
    values.update(kernel_trust=kernel_trust, taint="".join(taint.get("value") or []))
    return values


def _row(host, index):
    # type: (Dict[str, Any], int) -> str
    values = _cell_values(host)
    cells = "".join('<td data-k="%s">%s</td>' % (key, html.escape(values[key])) for key, _h, _n in COLUMNS)
    return '<tr class="host %s" data-i="%d" tabindex="0">%s</tr>' % (html.escape(host["status"]), index, cells)


def _bar(y, label, parts, width=420):
    # type: (int, str, Sequence[Any], int) -> str
    """One stacked horizontal bar: parts are (count, colour, name)."""
    total = sum(p[0] for p in parts) or 1
    out = ['<text x="0" y="%d" class="l">%s</text>' % (y + 13, html.escape(label))]
    x = 150.0
    for count, colour, name in parts:
        w = width * count / total
        if w:
            out.append('<rect x="%.1f" y="%d" width="%.1f" height="18" fill="%s"><title>%s: %d</title></rect>'
                       % (x, y, w, colour, html.escape(name), count))
        x += w
    legend = ", ".join("%s %d" % (name, count) for count, _c, name in parts)
    out.append('<text x="%d" y="%d" class="n">%s</text>' % (150 + width + 8, y + 13, html.escape(legend)))
    return "".join(out)


def chart_svg(t):
    # type: (Dict[str, int]) -> str
    bars = [
        _bar(0, "modules", [(t["modules_trusted"], "#2e7d32", "signed by us"),
                            (t["modules_foreign"], "#ef6c00", "foreign"),
                            (t["modules_unsigned"], "#c62828", "unsigned")]),
        _bar(28, "enforcement", [(t["enforce_active"], "#2e7d32", "active"),
                                 (t["enforce_configured"], "#1565c0", "configured, next boot"),
                                 (t["enforce_off"], "#9e9e9e", "off")]),
        _bar(56, "MOK", [(t["hosts"] - t["mok_pending"], "#9e9e9e", "nothing pending"),
                         (t["mok_pending"], "#f9a825", "pending")]),
        _bar(84, "hosts", [(t["hosts"] - t["attention"], "#2e7d32", "fine"),
                           (t["attention"], "#c62828", "need attention")]),
    ]
    return ('<svg id="chart" role="img" aria-label="fleet state" xmlns="http://www.w3.org/2000/svg" '
            'width="860" height="106" viewBox="0 0 860 106">%s</svg>' % "".join(bars))


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.3em;margin:0 0 .4em}
#chart .l,#chart .n{font-size:12px;fill:#333}
.bar{display:flex;gap:1.2em;align-items:center;margin:.8em 0}
table{border-collapse:collapse;width:100%}
th,td{padding:.25em .5em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
th{cursor:pointer;background:#f4f4f4;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
tr.host{cursor:pointer} tr.host:hover{background:#f0f6ff} tr.sel{background:#dbe9ff}
tr.attention td[data-k=status]{color:#c62828;font-weight:600}
tr.ok td[data-k=status]{color:#2e7d32} tr.unknown td[data-k=status]{color:#8d6e00}
.main{display:flex;gap:1em;align-items:flex-start}
#hosts{flex:1 1 auto;width:auto} #hosts td[data-k=enforce]{white-space:normal}
#detail{flex:0 0 32em;min-width:0;overflow-wrap:anywhere;border:1px solid #bbb;border-radius:4px;padding:.4em .8em;background:#fafafa;font-size:13px;
position:sticky;top:.5em;max-height:95vh;overflow:auto}
#detail h2{font-size:1.1em;margin:.2em 0} #detail h3{font-size:1em;margin:.6em 0 .1em}
#detail table{width:auto} #detail td{white-space:normal;vertical-align:top;padding:.1em .4em}
#detail ul{margin:.1em 0 .4em 1.2em;padding:0}
"""

_SCRIPT = r"""
(function(){
var t0=performance.now();
var data=JSON.parse(document.getElementById('data').textContent);
var tbody=document.querySelector('#hosts tbody');
var rows=Array.prototype.slice.call(tbody.rows);
var box=document.getElementById('attention-filter');
var count=document.getElementById('count');
function refresh(){
  var only=box.checked, n=0;
  rows.forEach(function(r){var hide=only&&!r.classList.contains('attention');r.hidden=hide;if(!hide)n++;});
  count.textContent=n+' of '+rows.length+' hosts shown';
}
box.addEventListener('click',refresh);
function sortBy(th){
  var key=th.dataset.k, num=th.dataset.num==='1';
  var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
  document.querySelectorAll('#hosts th').forEach(function(h){h.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',dir);
  var idx=th.cellIndex, sign=dir==='ascending'?1:-1;
  var keyed=rows.map(function(r){var v=r.cells[idx].textContent;return [num?(+v||0):v.toLowerCase(),r];});
  keyed.sort(function(a,b){return a[0]<b[0]?-sign:a[0]>b[0]?sign:0;});
  var frag=document.createDocumentFragment();
  keyed.forEach(function(p){frag.appendChild(p[1]);});
  tbody.appendChild(frag);
  rows=keyed.map(function(p){return p[1];});
}
document.querySelectorAll('#hosts th').forEach(function(th){th.addEventListener('click',function(){sortBy(th);});});
function el(tag,text){var e=document.createElement(tag);if(text!==undefined)e.textContent=String(text);return e;}
function fact(f){
  if(!f)return '';
  if(f.state==='known')return Array.isArray(f.value)?(f.value.join('')||'none'):String(f.value);
  return f.state+(f.reason?' ('+f.reason+')':'');
}
function list(title,items,parent){
  parent.appendChild(el('h3',title));
  var ul=el('ul');
  if(!items.length)ul.appendChild(el('li','none'));
  items.forEach(function(i){ul.appendChild(el('li',i));});
  parent.appendChild(ul);
}
function show(i){
  var h=data.hosts[i], d=document.getElementById('detail'), rt=h.runtime||{};
  d.textContent='';d.hidden=false;
  d.appendChild(el('h2',h.host+' \u2014 '+h.status));
  list('Needs attention because',h.attention,d);
  var t=el('table');
  [['modules signed by us / total',h.modules_trusted+' / '+h.modules_total],['unsigned',h.modules_unsigned],
   ['foreign or bad signature',h.modules_foreign],['key (sha256)',h.key_fingerprint],['key mode',h.key_mode],
   ['DKMS hook',h.dkms_hook],['MOK',h.mok_state],['enforce',h.enforce],['reboot needed',h.reboot_needed],
   ['lockdown',fact(rt.lockdown)],['Secure Boot',fact((rt.efi||{}).secure_boot)],
   ['MokSBState',fact((rt.efi||{}).mok_sb_state)],['MokListTrustedRT',fact((rt.efi||{}).mok_list_trusted)],
   ['sig_enforce',fact(rt.sig_enforce)],['CONFIG_MODULE_SIG_FORCE',fact(rt.config_module_sig_force)],
   ['taint',fact(rt.taint)],['module-trusting keyrings',(rt.module_trusting_keyrings||['unknown']).join(', ')]
  ].forEach(function(p){var tr=el('tr');tr.appendChild(el('td',p[0]));tr.appendChild(el('td',p[1]));t.appendChild(tr);});
  d.appendChild(t);
  list('Our certificates in the running kernel',(rt.certificates||[]).map(function(c){
    var t=c.trusted_for_modules===true?'trusted for modules':c.trusted_for_modules===false?'NOT trusted':'unknown';
    return c.description+': '+t+' ('+c.reason+')';}),d);
  var rings=rt.keyrings||{};
  list('Keyrings',Object.keys(rings).map(function(n){var r=rings[n];
    return n+': '+(r.state==='known'?r.keys.length+' key(s)'+(r.keys.length?' \u2014 '+r.keys.join('; '):''):fact(r));}),d);
  list('Loaded modules the kernel did not verify (taint E)',rt.untrusted_modules||[],d);
  list('Kernel messages since boot',(rt.rejections||[]).map(function(r){return r.message;}),d);
  rows.forEach(function(r){r.classList.toggle('sel',+r.dataset.i===i);});
}
tbody.addEventListener('click',function(e){var r=e.target.closest('tr.host');if(r)show(+r.dataset.i);});
function fromHash(){
  var parts=decodeURIComponent(location.hash.slice(1)).split('&');
  parts.forEach(function(p){
    if(p==='attention'&&!box.checked)box.click();
    if(p.indexOf('sort=')===0){var s=p.slice(5).split(':');var th=document.querySelector('#hosts th[data-k="'+s[0]+'"]');
      if(th){th.click();if(s[1]==='desc')th.click();}}
    if(p.indexOf('host=')===0){var name=p.slice(5);
      rows.forEach(function(r){if(data.hosts[+r.dataset.i].host===name)r.click();});}
  });
}
refresh();fromHash();
window.addEventListener('hashchange',fromHash);
document.body.dataset.readyMs=(performance.now()-t0).toFixed(1);
})();
"""


def _script_json(value):
    # type: (Any) -> str
    """JSON safe inside <script>: no "</" or "<!--" can end or confuse the element."""
    return json.dumps(value, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def runtime_summary(runtime):
    # type: (Dict[str, Any]) -> Dict[str, Any]
    """The part of skm_kernel_facts' answer the page shows (the keys' descriptions, not every field)."""
    if not runtime:
        return {}
    rings = {}
    for name, ring in ((runtime.get("keyrings") or {}).get("keyrings") or {}).items():
        entry = {"state": ring.get("state"), "reason": ring.get("reason")}
        if ring.get("state") == "known":
            entry["keys"] = [k.get("description") or "?" for k in ring.get("value") or []
                             if k.get("type") != "keyring"] if name != ".blacklist" else \
                ["%d entries" % len(ring.get("value") or [])]
        rings[name] = entry
    modules = runtime.get("modules") or {}
    return {
        "verdict": runtime.get("verdict"), "certificates": runtime.get("certificates") or [],
        "module_trusting_keyrings": runtime.get("module_trusting_keyrings"), "keyrings": rings,
        "lockdown": runtime.get("lockdown"), "efi": runtime.get("efi") or {}, "sig_enforce": runtime.get("sig_enforce"),
        "config_module_sig_force": runtime.get("config_module_sig_force"), "taint": runtime.get("taint"),
        "untrusted_modules": sorted(m["name"] for m in modules.get("value") or [] if not m.get("kernel_verified", True)),
        "rejections": ((runtime.get("rejections") or {}).get("value") or []),
    }


def fleet_report_html(report, title="skm.modsign fleet report"):
    # type: (Dict[str, Any], str) -> str
    """The self-contained page for a document made by ``fleet_report``."""
    hosts = report["hosts"]
    t = report["totals"]
    head = "".join('<th data-k="%s" data-num="%d" scope="col">%s</th>' % (key, int(num), html.escape(label))
                   for key, label, num in COLUMNS)
    body = "\n".join(_row(h, i) for i, h in enumerate(hosts))
    return "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<title>%s</title><style>%s</style></head><body>\n' % (html.escape(title), _STYLE),
        '<h1>%s</h1>\n' % html.escape(title),
        '<p id="summary">%d hosts, %d need attention. Modules: %d signed by us, %d foreign, %d unsigned.</p>\n'
        % (t["hosts"], t["attention"], t["modules_trusted"], t["modules_foreign"], t["modules_unsigned"]),
        chart_svg(t),
        '\n<div class="bar"><label><input type="checkbox" id="attention-filter"> needs attention only</label>',
        '<span id="count">%d hosts</span></div>\n' % len(hosts),
        '<div class="main"><table id="hosts"><thead><tr>%s</tr></thead><tbody>\n%s\n</tbody></table>\n' % (head, body),
        '<section id="detail" hidden></section></div>\n',
        '<script type="application/json" id="data">%s</script>\n' % _script_json({"hosts": hosts}),
        '<script>%s</script>\n</body></html>\n' % _SCRIPT,
    ])
