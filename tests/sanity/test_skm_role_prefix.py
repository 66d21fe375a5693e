"""The custom ansible-lint rule skm-role-prefix finds what it should, through the real ansible-lint
with our .ansible-lint, on a scratch collection tree (run by `make lint`)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
ANSIBLE_LINT = pathlib.Path(sys.executable).parent / "ansible-lint"

TASKS = """---
- name: Set facts
  ansible.builtin.set_fact:
    skm_demo_fine: 1
    other_bad: 2
- name: Run a command
  ansible.builtin.command: "true"
  register: result_bad
  changed_when: false
- name: Hand vars to another role of ours
  ansible.builtin.include_role:
    name: other
  vars:
    x_bad: 1
    skm_other_ok: 2
- name: A template's own inputs are free
  ansible.builtin.template:
    src: a.j2
    dest: /tmp/a
    mode: "0644"
  vars:
    free_var: 1
"""


def test_rule_reports_exactly_the_unprefixed_names(tmp_path):
    shutil.copy(REPO / ".ansible-lint", tmp_path / ".ansible-lint")
    shutil.copytree(REPO / "tests" / "sanity" / "lint_rules", tmp_path / "tests" / "sanity" / "lint_rules")
    demo = tmp_path / "roles" / "demo"
    (demo / "tasks").mkdir(parents=True)
    (demo / "defaults").mkdir()
    (demo / "templates").mkdir()
    (demo / "templates" / "a.j2").write_text("a\n")
    (demo / "defaults" / "main.yml").write_text("---\nskm_demo_ok: 1\ndemo_bad: 2\n__private: 3\n")
    (demo / "tasks" / "main.yml").write_text(TASKS)
    (tmp_path / "roles" / "other" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "other" / "tasks" / "main.yml").write_text(
        "---\n- name: Nothing\n  ansible.builtin.debug:\n    msg: hi\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    proc = subprocess.run([str(ANSIBLE_LINT), "-f", "pep8", "--nocolor"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    found = sorted(line.split(": ", 2)[2] for line in proc.stdout.splitlines() if "skm-role-prefix" in line)
    assert found == sorted([
        "variable 'demo_bad' in role demo does not start with skm_demo_",
        "set_fact: 'other_bad' in role demo does not start with skm_demo_",
        "register: 'result_bad' in role demo does not start with skm_demo_",
        "vars: 'x_bad' in role other does not start with skm_other_",
    ]), proc.stdout + proc.stderr
    assert proc.returncode != 0
