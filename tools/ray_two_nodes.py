"""`asanet-rt batch` on a two-node Ray cluster on one machine, with one node killed mid-run.

Starts a head (`ray start --head`) and a second node (`ray start --address`, its own custom resource), both on
127.0.0.1, runs a batch of small scenes with actors spread over both nodes, kills the second node's raylet after
the first scenes finish, and checks that the run completes with every scene written once, nothing lost or
duplicated, and every map equal to the in-process (sequential) run. Prints a JSON report; exit 0 when all holds.

    python tools/ray_two_nodes.py [--scenes 12] [--size 384] [--keep DIR]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from asanet_rt.batch import BatchConfig, run_batch  # noqa: E402
from runtime_helpers import random_pair, write_raster  # noqa: E402
from toy_models import make_toy_onnx  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run([RAY, "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
                          capture_output=True, text=True, env=env, timeout=180)
    if done.returncode:
        raise SystemExit(f"ray start {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def _cmdlines() -> dict[int, list[bytes]]:
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out[int(proc.name)] = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
    return out


def kill_tree(roots: set[int]) -> list[int]:
    """SIGKILL ``roots`` and all their descendants."""
    ours = set(roots)
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    grown = True
    while grown:
        children = {pid for pid, ppid in parents.items() if ppid in ours} - ours
        grown = bool(children)
        ours |= children
    ours.discard(os.getpid())
    for pid in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return sorted(ours)


def stop_cluster(temp_dir: Path) -> list[int]:
    """SIGKILL the processes of this cluster only (their command lines name its temp dir) and their children.

    Not `ray stop`: that would end every Ray process on the machine, other users' included.
    """
    return kill_tree({pid for pid, cmd in _cmdlines().items() if any(str(temp_dir).encode() in part for part in cmd)})


def raylet_pid(node_manager_port: int) -> int:
    """The pid of the raylet started with ``--node_manager_port=PORT`` (the second node)."""
    for pid, cmd in _cmdlines().items():
        if cmd and cmd[0].endswith(b"raylet") and f"--node_manager_port={node_manager_port}".encode() in cmd:
            return pid
    raise SystemExit(f"no raylet with node manager port {node_manager_port}")


class KillAfter(io.StringIO):
    """The batch's progress stream: kills the second node once ``after`` scenes have finished, one of them there."""

    def __init__(self, after: int, pid: int, node: str, records: Path) -> None:
        super().__init__()
        self.after, self.pid, self.node, self.records = after, pid, node, records
        self.lines, self.killed_at = 0, None

    def _node_finished_one(self) -> bool:
        for path in self.records.glob("*.json"):
            try:
                if json.loads(path.read_text()).get("node") == self.node:
                    return True
            except (OSError, ValueError):
                continue
        return False

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        sys.stderr.write(text)
        if self.killed_at is None and self.lines >= self.after and self._node_finished_one():
            killed = kill_tree({self.pid})  # the raylet and its workers, as when the machine goes away
            self.killed_at = self.lines
            sys.stderr.write(f"-- killed the second node (raylet pid {self.pid} and {len(killed) - 1} worker "
                             f"process(es)) after {self.lines} scene(s)\n")
        return len(text)


def maps(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*.tif")):
        with rasterio.open(path) as src:
            out[path.name] = src.read(1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--size", type=int, default=384, help="scene edge in px")
    parser.add_argument("--kill-after", type=int, default=3, help="scenes finished before the node is killed")
    parser.add_argument("--keep", default=None, help="keep the inputs and outputs in this folder")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="asanet-ray2-"))
    work.mkdir(parents=True, exist_ok=True)
    model = make_toy_onnx(work / "toy.onnx")
    (work / "in").mkdir(exist_ok=True)
    lines = ["optical,sar,output"]
    for i in range(args.scenes):
        opt, sar = random_pair(args.size, args.size, seed=100 + i)
        write_raster(work / "in" / f"s2_{i}.tif", opt)
        write_raster(work / "in" / f"s1_{i}.tif", sar)
        lines.append(f"in/s2_{i}.tif,in/s1_{i}.tif,map_{i:02d}.tif")
    (work / "scenes.csv").write_text("\n".join(lines) + "\n")

    t0 = time.perf_counter()
    reference = run_batch(work / "scenes.csv", work / "seq", BatchConfig(model=str(model), progress=False))
    seq_seconds = time.perf_counter() - t0

    port, nm_port = free_port(), free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ar2-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    # a private token for this cluster (not ~/.ray/auth_token, which other clusters of this user may use)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env = dict(os.environ, RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="4",
               RAY_health_check_initial_delay_ms="0")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(var, None)
    report: dict = {"scenes": args.scenes, "size": args.size, "sequential_seconds": round(seq_seconds, 2)}
    try:
        t0 = time.perf_counter()
        ray_start("--head", f"--port={port}", f"--temp-dir={temp_dir}", "--num-cpus=3", '--resources={"asanet_head": 3}',
                  "--include-dashboard=false", env=env)
        ray_start(f"--address=127.0.0.1:{port}", "--num-cpus=2", '--resources={"asanet_node2": 2}',
                  f"--node-manager-port={nm_port}", env=env)
        report["cluster_start_seconds"] = round(time.perf_counter() - t0, 1)
        import ray

        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        report["nodes"] = {n["NodeID"]: {"address": n["NodeManagerAddress"], "port": n["NodeManagerPort"],
                                         "resources": sorted(k for k in n["Resources"] if k.startswith("asanet"))}
                           for n in nodes}
        node2 = next(n["NodeID"] for n in nodes if "asanet_node2" in n["Resources"])
        stream = KillAfter(args.kill_after, raylet_pid(nm_port), node2, work / "ray" / ".done")
        t0 = time.perf_counter()
        summary = run_batch(work / "scenes.csv", work / "ray", BatchConfig(
            model=str(model), ray=f"127.0.0.1:{port}", workers=3, retries=2, progress=True), stream=stream)
        report["ray_seconds"] = round(time.perf_counter() - t0, 2)
        ray.shutdown()
    finally:
        report["stopped_processes"] = len(stop_cluster(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)

    names = [r["name"] for r in summary["results"]]
    got, want = maps(work / "ray"), maps(work / "seq")
    leftovers = [p.name for p in (work / "ray").iterdir() if ".partial" in p.name]
    by_node = summary["per_node"]
    checks = {
        # a scene the killed node finished (record written) but could not report is skipped on its retry
        "every scene done": summary["done"] + summary["skipped"] == args.scenes and summary["failed"] == 0,
        "each scene reported once": sorted(names) == sorted(set(names)) and len(names) == args.scenes,
        "one map per scene": sorted(got) == sorted(want) == [f"map_{i:02d}.tif" for i in range(args.scenes)],
        "maps equal the sequential run": all(np.array_equal(got[k], want[k]) for k in want),
        "no temporary files left": not leftovers,
        "scenes ran on both nodes": len(by_node) == 2 and by_node.get(node2, 0) > 0,
        "the second node was killed mid-run": stream.killed_at is not None and stream.killed_at < args.scenes,
    }
    report.update(done=summary["done"], skipped=summary["skipped"], per_node=by_node, killed_after=stream.killed_at, reference_done=reference["done"],
                  failures=summary["failures"], checks=checks, ok=all(checks.values()))
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
