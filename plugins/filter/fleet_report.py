# -*- coding: utf-8 -*-
# Copyright: skm.modsign contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the report role: the fleet report's JSON document and its self-contained HTML page."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: skm_fleet_report
short_description: The fleet report as a versioned document, or as one self-contained HTML page
description:
  - C(skm_fleet_report) turns the report role's rows (one per host) into the JSON document described in
    C(docs/fleet-report-schema.md) - C(schema), C(schema_version), C(totals), C(hosts) with their attention reasons.
  - C(skm_fleet_report_html) renders such a document as one HTML file with no external asset - sortable host table,
    a "needs attention" filter, a per-host detail view with the running kernel's evidence and an inline SVG chart.
author:
  - skm.modsign contributors (@skm-modsign)
options:
  _input:
    description: The rows (C(skm_fleet_report)) or the document (C(skm_fleet_report_html)).
    type: raw
    required: true
"""

from ansible_collections.skm.modsign.plugins.plugin_utils._fleet_report import fleet_report, fleet_report_html


class FilterModule(object):
    def filters(self):
        return {"skm_fleet_report": fleet_report, "skm_fleet_report_html": fleet_report_html}
