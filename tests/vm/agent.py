"""Command agent that runs inside the test VM (PID 1's child), on the second serial port.

Protocol: one JSON object per line each way, binary fields base64-encoded.
  {"argv": [...], "stdin": b64, "timeout": s, "env": {...}} -> {"rc": n, "stdout": b64, "stderr": b64}
  {"put": path, "data": b64, "mode": n}                      -> {"rc": 0}
  {"get": path}                                              -> {"rc": 0, "data": b64}
It is test machinery, not part of the collection: it never interprets mokutil output.
"""

import base64
import json
import os
import subprocess
import sys
import tty


def b64(data):
    return base64.b64encode(data).decode("ascii")


def handle(request):
    if "put" in request:
        with open(request["put"], "wb") as handle_:
            handle_.write(base64.b64decode(request["data"]))
        os.chmod(request["put"], request.get("mode", 0o600))
        return {"rc": 0}
    if "get" in request:
        with open(request["get"], "rb") as handle_:
            return {"rc": 0, "data": b64(handle_.read())}
    env = dict(os.environ)
    env.update(request.get("env") or {})
    try:
        proc = subprocess.run(request["argv"], input=base64.b64decode(request.get("stdin") or ""),
                              capture_output=True, env=env, timeout=request.get("timeout") or 600, check=False)
    except FileNotFoundError as exc:
        return {"rc": 127, "stdout": "", "stderr": b64(str(exc).encode())}
    except subprocess.TimeoutExpired:
        return {"rc": 124, "stdout": "", "stderr": b64(b"timeout")}
    return {"rc": proc.returncode, "stdout": b64(proc.stdout), "stderr": b64(proc.stderr)}


def main(port):
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    reader = os.fdopen(fd, "rb", buffering=0)
    writer = os.fdopen(os.dup(fd), "wb", buffering=0)
    with open("/dev/console", "w") as console:
        console.write("SKM-VM-READY\n")
    line = b""
    while True:
        chunk = reader.read(65536)
        if not chunk:
            continue
        line += chunk
        while b"\n" in line:
            raw, line = line.split(b"\n", 1)
            raw = raw.strip()
            if not raw:
                continue
            try:
                reply = handle(json.loads(raw))
            except Exception as exc:  # report, keep serving
                reply = {"rc": 125, "stdout": "", "stderr": b64(repr(exc).encode())}
            writer.write(json.dumps(reply).encode() + b"\n")


if __name__ == "__main__":
    main(sys.argv[1])
