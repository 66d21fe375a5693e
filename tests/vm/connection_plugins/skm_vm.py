# Test machinery (not part of the collection): an Ansible connection to the qemu test VM of
# tests/vm/vm.py, through its serial-port agent. Lets real ansible-playbook run a module inside
# the VM, where mokutil meets real efivarfs over OVMF's variable store.
from __future__ import annotations

DOCUMENTATION = """
name: skm_vm
short_description: run commands in the skm.modsign test VM over its serial agent
description: Test-only connection to tests/vm/vm.py's agent socket.
author: skm.modsign contributors
options:
  socket:
    description: Path of the VM agent's unix socket.
    vars:
      - name: skm_vm_socket
"""

import base64
import pathlib
import sys

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection import ConnectionBase

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))
from tests.vm.vm import agent_request  # noqa: E402


class Connection(ConnectionBase):
    transport = "skm_vm"
    has_pipelining = True

    def _connect(self):
        self._connected = True
        return self

    def _socket(self):
        return self.get_option("socket")

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        data = in_data if isinstance(in_data, bytes) else (in_data or "").encode()
        try:
            reply = agent_request(self._socket(), {"argv": ["/bin/sh", "-c", cmd],
                                                   "stdin": base64.b64encode(data).decode(), "timeout": 900})
        except Exception as exc:
            raise AnsibleConnectionFailure(f"skm_vm: {exc}")
        return reply["rc"], base64.b64decode(reply.get("stdout") or ""), base64.b64decode(reply.get("stderr") or "")

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        data = pathlib.Path(in_path).read_bytes()
        reply = agent_request(self._socket(), {"put": out_path, "data": base64.b64encode(data).decode(),
                                               "mode": 0o600})
        if reply["rc"]:
            raise AnsibleConnectionFailure(f"skm_vm: cannot put {out_path}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        reply = agent_request(self._socket(), {"get": in_path})
        if reply["rc"]:
            raise AnsibleConnectionFailure(f"skm_vm: cannot fetch {in_path}")
        pathlib.Path(out_path).write_bytes(base64.b64decode(reply["data"]))

    def close(self):
        self._connected = False
