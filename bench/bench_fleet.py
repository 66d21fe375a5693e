#!/usr/bin/env python3
"""Fleet benchmark: Ansible over the local test fleet (tests/fleet/fleet.sh), not a timed test.

For each fleet size (default 10 and 30 hosts) it starts the fleet, then runs each case and records the
wall time and the controller's memory: the peak of the summed PSS of ansible-playbook and every process
under it (workers, ssh; PSS so that pages forked workers share count once), sampled every 50 ms, and the
largest single process's RSS. Cases:

  baseline           tests/fleet/baseline.yml (3 tasks + fact gathering), Ansible's defaults (forks 5)
  baseline-forks     the same with forks = the fleet size
  baseline-pipe      forks = fleet size and ssh pipelining
  baseline-free      forks = fleet size, pipelining, strategy free
  baseline-mitogen   forks = fleet size, mitogen_linear strategy (when mitogen is installed)
  site-1st, site-2nd playbooks/site.yml twice (first run, idempotent second run), forks = fleet size and
                     ssh pipelining, when --site is given; controller key mode with the key, MOK password
                     and report under build/bench-fleet/ (as scripts/demo_fleet.sh runs it)
  site-mitogen-1st/2nd  the same on a fresh fleet with mitogen_linear (when mitogen is installed)

Every row also gives its wall time as a ratio to the baseline (defaults) of the same fleet size; the
target is site-2nd within 3x the baseline on 30 hosts.

Usage: bench/bench_fleet.py [--sizes 10,30] [--cases a,b] [--repeat 1] [--site] [--site-args '-e x=y'] [--keep]
                            [--reuse]   (the fleet that is up, as earlier runs left it: second runs only)
Results: a table on stdout and build/bench_fleet.json. Needs root and the images (make images).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "tests" / "fleet" / "fleet.sh"
VENV_BIN = ROOT / ".venv" / "bin"


def fleet(*args: str) -> None:
    subprocess.run(["bash", str(FLEET), *args], check=True, env=environment())


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "images" / "containers.conf"))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / "build" / "collections")
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_HOST_KEY_CHECKING"] = "True"
    env["ANSIBLE_RETRY_FILES_ENABLED"] = "False"
    env.pop("ANSIBLE_PYTHON_INTERPRETER", None)
    env.update(extra or {})
    return env


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _memory_kib(pid: int) -> tuple[int, int]:
    """PSS and RSS of one process (KiB); PSS shares the pages forked workers have in common."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def tree_memory(root_pid: int) -> tuple[int, int]:
    """Summed PSS of root_pid and all its descendants, and the largest RSS among them (KiB)."""
    children = _children_map()
    stack, total, largest = [root_pid], 0, 0
    while stack:
        pid = stack.pop()
        pss, rss = _memory_kib(pid)
        total += pss
        largest = max(largest, rss)
        stack.extend(children.get(pid, []))
    return total, largest


def run_playbook(playbook: Path, inventory: str, forks: int | None, settings: dict[str, str],
                 extra_args: list[str]) -> dict[str, object]:
    cmd = ["bash", str(FLEET), "run", str(VENV_BIN / "ansible-playbook"), "-i", inventory, str(playbook)]
    if forks:
        cmd += ["--forks", str(forks)]
    cmd += extra_args
    peak_total = peak_single = 0
    with tempfile.TemporaryFile("w+") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=environment(settings), stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            total, single = tree_memory(proc.pid)
            peak_total, peak_single = max(peak_total, total), max(peak_single, single)
            time.sleep(0.05)
        wall = time.monotonic() - started
        log.seek(0)
        text = log.read()
    recap = [line for line in text.splitlines() if " ok=" in line and " failed=" in line]
    changed = sum(int(line.split("changed=")[1].split()[0]) for line in recap)
    failed = sum(int(line.split("failed=")[1].split()[0]) + int(line.split("unreachable=")[1].split()[0])
                 for line in recap)
    if proc.returncode != 0:
        failed_log = ROOT / "build" / f"bench_fleet-failed-{playbook.stem}-{os.getpid()}-{int(started)}.log"
        failed_log.write_text(text)
        sys.stderr.write(text[-2000:] + f"\n(whole output in {failed_log})\n")
    return {"wall_s": round(wall, 2), "peak_pss_mib": round(peak_total / 1024, 1),
            "largest_process_mib": round(peak_single / 1024, 1), "hosts": len(recap), "changed": changed,
            "failed": failed, "rc": proc.returncode}


def mitogen_strategies() -> str | None:
    """The strategy plugin folder of mitogen (requirements-molecule.txt), if it is installed."""
    try:
        import ansible_mitogen  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy")


def cases(size: int, site: bool) -> list[tuple[str, Path, int | None, dict[str, str]]]:
    baseline = ROOT / "tests" / "fleet" / "baseline.yml"
    pipelining = {"ANSIBLE_PIPELINING": "True"}
    free = {**pipelining, "ANSIBLE_STRATEGY": "free"}
    out = [
        ("baseline", baseline, None, {}),
        ("baseline-forks", baseline, size, {}),
        ("baseline-pipe", baseline, size, pipelining),
        ("baseline-free", baseline, size, free),
    ]
    mitogen = mitogen_strategies()
    if mitogen:
        # mitogen opens every host's connection at once from one process: on 2 busy cores 30 of them
        # exceed Ansible's default 10 s connection timeout, hence 60 s.
        out.append(("baseline-mitogen", baseline, size,
                    {"ANSIBLE_STRATEGY_PLUGINS": mitogen, "ANSIBLE_STRATEGY": "mitogen_linear",
                     "ANSIBLE_TIMEOUT": "60"}))
    if site:
        site_yml = ROOT / "playbooks" / "site.yml"
        out += [("site-1st", site_yml, size, pipelining), ("site-2nd", site_yml, size, pipelining)]
        if mitogen:
            with_mitogen = {**pipelining, "ANSIBLE_STRATEGY_PLUGINS": mitogen, "ANSIBLE_STRATEGY": "mitogen_linear",
                            "ANSIBLE_TIMEOUT": "60"}
            out += [("site-mitogen-1st", site_yml, size, with_mitogen),
                    ("site-mitogen-2nd", site_yml, size, with_mitogen)]
    return out


def site_vars() -> list[str]:
    """-e arguments for site.yml: controller key mode, key/report/MOK password under build/bench-fleet/."""
    work = ROOT / "build" / "bench-fleet"
    (work / "keys").mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)
    secrets = work / "secrets.yml"
    if not secrets.exists():
        fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write('skm_mok_password: "%s"\n' % os.urandom(12).hex())
    (work / "vars.yml").write_text(
        f"skm_signing_key_mode: controller\nskm_signing_key_controller_dir: {work / 'keys'}\n"
        f"skm_report_dir: {work / 'report'}\nskm_report_print: false\n")
    return ["-e", f"@{work / 'vars.yml'}", "-e", f"@{secrets}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,30")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each baseline case (best is kept)")
    parser.add_argument("--site", action="store_true", help="also run playbooks/site.yml twice")
    parser.add_argument("--site-args", default="", help="extra ansible-playbook arguments for site.yml")
    parser.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    parser.add_argument("--keep", action="store_true", help="leave the last fleet up")
    parser.add_argument("--reuse", action="store_true",
                        help="run on the fleet that is up (one size; its hosts keep what earlier runs did)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_fleet: needs root (rootful podman, ip netns)", file=sys.stderr)
        return 2
    results: list[dict[str, object]] = []
    sizes = [int(s) for s in args.sizes.split(",") if s]
    try:
        for size in sizes:
            started = time.monotonic()
            if not args.reuse:
                fleet("up", str(size))
            up_s = round(time.monotonic() - started, 1)
            inventory = str(ROOT / "build" / "fleet" / "inventory.ini")
            print(f"fleet of {size} up in {up_s} s", flush=True)
            wanted = set(filter(None, args.cases.split(",")))
            for name, playbook, forks, settings in cases(size, args.site):
                if wanted and name not in wanted:
                    continue
                site_case = name.startswith("site")
                extra = site_vars() + shlex.split(args.site_args) if site_case else []
                if name == "site-mitogen-1st" and not args.reuse:   # a fresh fleet: everything to do again
                    fleet("up", str(size))
                runs = [run_playbook(playbook, inventory, forks, settings, extra)
                        for _ in range(1 if site_case else args.repeat)]
                best = min(runs, key=lambda r: float(r["wall_s"]))  # type: ignore[arg-type]
                row = {"size": size, "case": name, "fleet_up_s": up_s, **best,
                       "load_1min": round(os.getloadavg()[0], 1)}
                base = row if name == "baseline" else next(
                    (r for r in results if r["size"] == size and r["case"] == "baseline"), None)
                row["x_baseline"] = round(float(best["wall_s"]) / float(base["wall_s"]), 2) if base else None
                results.append(row)
                print(f"{size:>4} hosts  {name:<17} {best['wall_s']:>7} s  x{row['x_baseline']}"
                      f"  peak PSS {best['peak_pss_mib']:>7} MiB"
                      f"  largest {best['largest_process_mib']:>6} MiB  changed={best['changed']}"
                      f"  failed={best['failed']}  rc={best['rc']}  load={row['load_1min']}", flush=True)
            if (size != sizes[-1] or not args.keep) and not args.reuse:
                started = time.monotonic()
                fleet("down")
                print(f"fleet of {size} down in {time.monotonic() - started:.1f} s", flush=True)
    finally:
        if not args.keep and not args.reuse:
            fleet("down")
    out = ROOT / "build" / "bench_fleet.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {out}")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
