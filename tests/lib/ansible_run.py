"""Run a module of this collection through real Ansible (ansible-playbook on localhost)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "build" / "collections"


def ansible_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    })
    env.update(extra or {})
    return env


def bin_path(name: str) -> str:
    candidate = pathlib.Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run_playbook(playbook: str | pathlib.Path, *args: str, env: dict | None = None,
                 check: bool = False, diff: bool = False, verbosity: int = 0) -> subprocess.CompletedProcess:
    cmd = [bin_path("ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook), *args]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    return subprocess.run(cmd, capture_output=True, text=True, env=ansible_env(env), check=False)


def run_module(module: str, args: dict, check: bool = False, diff: bool = False,
               env: dict | None = None, vars: dict | None = None) -> dict:
    """Run ``skm.modsign.<module>`` once with ``args``; return its task result (dict).

    ``result["_stdout"]``/``["_stderr"]`` hold the raw ansible-playbook output for leak checks.
    """
    play = [{
        "hosts": "localhost", "gather_facts": False, "vars": vars or {},
        "tasks": [{"name": "under test", f"skm.modsign.{module}": args}],
    }]
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "play.yml"
        path.write_text(json.dumps(play))
        proc = run_playbook(path, check=check, diff=diff, env=env)
    try:
        report = json.loads(proc.stdout)
        result = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"ansible-playbook gave no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result["_stdout"] = proc.stdout
    result["_stderr"] = proc.stderr
    return result
