"""Install asanet-rt into a virtual environment with the CPU build of torch, on any machine.

The Makefile (`make setup`, `make demo`, `make test`) installs through this script, and CI checks through it that
the very same pip command resolves no CUDA wheel (`--check`). PyPI's Linux torch wheels are CUDA builds (GBs of
cuDNN, cuBLAS, NCCL, triton); PyTorch's CPU wheel index serves `torch==X+cpu`, which pip prefers over PyPI's `X`
(a local version sorts after its public one). When that index cannot be reached quickly, the plain pin is used:
package mirrors that serve the CPU wheel under the same pin then still give a CPU build, and `--check` says so
when they do not.

    python tools/install.py --python .venv/bin/python --extras export,plot          # install
    python tools/install.py --python .venv/bin/python --extras export,plot --check  # resolve only, assert CPU
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: torch's CUDA stack: never part of an asanet-rt install that did not ask for a GPU extra
CUDA_STACK = re.compile(r"^(nvidia-.*|triton|pytorch-triton.*)$")
#: GPU packages that only the GPU extras bring
GPU_PACKAGES = re.compile(r"^(cuda-.*|tensorrt.*|pycuda|cupy.*)$")
GPU_EXTRAS = {"rtx", "tensorrt", "cuda", "cupy"}


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of -, _ and . as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def index_reachable(url: str = TORCH_CPU_INDEX, timeout: float = 5.0) -> bool:
    """True when the CPU wheel index answers within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/torch/", method="HEAD"),
                                    timeout=timeout) as response:
            return response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def configured_extra_indexes(python: str) -> list[str]:
    """Extra indexes the user configured for pip (a command-line --extra-index-url would replace them)."""
    found = os.environ.get("PIP_EXTRA_INDEX_URL", "").split()
    for key in ("global.extra-index-url", "install.extra-index-url"):
        done = subprocess.run([python, "-m", "pip", "config", "get", key], capture_output=True, text=True)
        if done.returncode == 0:
            found += done.stdout.split()
    return list(dict.fromkeys(found))


def pip_command(python: str, extras: str, torch_index: str | None, keep: Sequence[str] = ()) -> list[str]:
    """The one pip command that installs asanet-rt with ``extras`` (torch from ``torch_index`` when given;
    ``keep``: the user's own extra indexes, which stay)."""
    cmd = [python, "-m", "pip", "install"]
    if torch_index:
        for url in (torch_index, *keep):
            cmd += ["--extra-index-url", url]
    target = f"{ROOT}[{extras}]" if extras else str(ROOT)
    return cmd + ["-e", target]


def unwanted_wheels(report: dict, extras: str) -> list[str]:
    """Names and versions of CUDA wheels in a ``pip install --report`` document that the extras did not ask for."""
    asked_gpu = bool(GPU_EXTRAS & {e.strip() for e in extras.split(",")})
    bad = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        name, version = normalise(meta.get("name", "")), meta.get("version", "")
        if CUDA_STACK.match(name) or (not asked_gpu and GPU_PACKAGES.match(name)):
            bad.append(f"{name}=={version}")
        elif name == "torch" and sys.platform.startswith("linux") and "+cpu" not in version:
            # on Linux only PyTorch's CPU index (or a mirror of it) has CPU builds; theirs carry +cpu
            requires = " ".join(meta.get("requires_dist") or [])
            if "nvidia-" in requires or "triton" in requires:
                bad.append(f"torch=={version} (a CUDA build)")
    return bad


def check(python: str, extras: str, torch_index: str | None) -> int:
    """Resolve the install without installing; exit status 1 and the offenders when a CUDA wheel would come."""
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        cmd = pip_command(python, extras, torch_index, configured_extra_indexes(python) if torch_index else ())
        cmd[4:4] = ["--dry-run", "--ignore-installed", "--quiet", "--report", str(report_path)]
        subprocess.run(cmd, check=True)
        report = json.loads(report_path.read_text())
    names = sorted(f"{normalise(i['metadata']['name'])}=={i['metadata']['version']}" for i in report["install"])
    torch = [n for n in names if n.startswith("torch==")]
    print(f"install of [{extras}] resolves {len(names)} wheels; torch: {', '.join(torch) or 'none'}; "
          f"torch index: {torch_index or 'default (CPU index unreachable)'}")
    bad = unwanted_wheels(report, extras)
    if bad:
        print("CUDA wheels in a CPU install: " + ", ".join(bad), file=sys.stderr)
        return 1
    print("no CUDA wheel")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--python", default=sys.executable, help="interpreter of the target environment")
    parser.add_argument("--extras", default="export,plot", help="comma list of setup.py extras (default export,plot)")
    parser.add_argument("--torch-index", default=TORCH_CPU_INDEX,
                        help=f"CPU wheel index for torch, used when reachable (default {TORCH_CPU_INDEX}; "
                             f"'none' to skip it)")
    parser.add_argument("--check", action="store_true",
                        help="resolve only (pip --dry-run --report) and fail if a CUDA wheel would be installed")
    args = parser.parse_args(argv)
    index = None
    if args.torch_index != "none":
        index = args.torch_index if index_reachable(args.torch_index) else None
        if index is None:
            print(f"{args.torch_index} not reachable: using the plain torch pin from the default index",
                  file=sys.stderr)
    if args.check:
        return check(args.python, args.extras, index)
    keep = configured_extra_indexes(args.python) if index else ()
    return subprocess.run(pip_command(args.python, args.extras, index, keep)).returncode


if __name__ == "__main__":
    sys.exit(main())
