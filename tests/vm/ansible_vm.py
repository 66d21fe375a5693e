"""Run a module of this collection through real ansible-playbook *inside* a DebianVM.

The controller is this host; the managed host is the VM, reached by the test-only connection plugin
``tests/vm/connection_plugins/skm_vm.py`` (pipelining: the AnsiballZ payload goes over the agent's
stdin and runs under the VM's /usr/bin/python3).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile

from tests.lib.ansible_run import ansible_env, bin_path

HERE = pathlib.Path(__file__).resolve().parent


def run_module_in_vm(vm, module: str, args: dict, check: bool = False, timeout: float = 900) -> dict:
    play = [{"hosts": "vm", "gather_facts": False,
             "tasks": [{"name": "under test", f"skm.modsign.{module}": args}]}]
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = pathlib.Path(tmp)
        (tmpdir / "play.yml").write_text(json.dumps(play))
        (tmpdir / "inventory").write_text(
            f"vm ansible_connection=skm_vm skm_vm_socket={vm.socket_path} "
            "ansible_python_interpreter=/usr/bin/python3\n")
        cmd = [bin_path("ansible-playbook"), "-i", str(tmpdir / "inventory"), str(tmpdir / "play.yml")]
        if check:
            cmd.append("--check")
        env = ansible_env({"ANSIBLE_CONNECTION_PLUGINS": str(HERE / "connection_plugins"),
                           "ANSIBLE_PIPELINING": "1", "ANSIBLE_HOST_KEY_CHECKING": "0"})
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["vm"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"ansible-playbook gave no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result["_stdout"] = proc.stdout
    result["_stderr"] = proc.stderr
    return result
