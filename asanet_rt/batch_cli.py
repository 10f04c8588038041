"""The batch subcommand: ``asanet-rt batch MANIFEST -o OUTDIR --model model.onnx [--ray ADDRESS|local]``."""
from __future__ import annotations

import argparse
import json
import sys

from .cli_options import (add_backend_option, add_engine_trust_option, add_json_options, add_quiet_option,
                          command, non_negative_int,
                          positive_float, positive_int, threads)
from .runtime_cli import add_scene_options, runtime_backends, scene_options

_EPILOG = """\
manifest (CSV with a header, or a JSON list of objects); relative paths resolve against the manifest's folder,
GDAL paths (/vsis3/..., /vsicurl/...) are passed through; output defaults to OPTICALSTEM_landcover.tif:
  optical,sar,output
  s2/a.tif,s1/a.tif,a_lc.tif
  /vsis3/bucket/s2/b.tif,/vsis3/bucket/s1/b.tif,

examples:
  asanet-rt batch scenes.csv -o maps/ --model model.onnx --optical-scale reflectance:0:3000 --sar-scale db:-25:0
  asanet-rt batch scenes.json -o maps/ --model model.onnx --ray local --workers 2
  asanet-rt batch scenes.csv -o /mnt/maps --model model.engine --ray head-node:6379   # one actor per GPU
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand."""
    p = command(
        subparsers, "batch", help="classify every scene pair of a manifest (in-process or on a Ray cluster), resumably",
        description="Classify the optical + SAR pairs listed in MANIFEST into OUTDIR. Finished scenes get a "
                    "done-record (OUTDIR/.done/NAME.json); a re-run skips scenes whose record still matches "
                    "(same inputs, model, SDK version and options). Failed scenes are retried, then reported.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", help="CSV (optical,sar[,output] header) or JSON list of objects")
    p.add_argument("-o", "--outdir", required=True, help="output folder (created if missing)")
    p.add_argument("--model", required=True, help="model: .onnx (ONNX Runtime) or .engine (TensorRT)")
    add_backend_option(p, runtime_backends(), "by file type")
    p.add_argument("--device", type=non_negative_int, default=0, help="GPU index without Ray (with Ray, each actor gets its own)")
    add_engine_trust_option(p)
    p.add_argument("--threads", type=threads, default=None,
                   help="CPU threads per worker for CPU backends (default: all cores in-process, else "
                        "--cpus-per-worker)")
    g = p.add_argument_group("parallelism and retries")
    g.add_argument("--ray", default=None, metavar="ADDRESS|local",
                   help="run on Ray: 'local' starts a local cluster, else the address of a running one "
                        "(head:6379 or 'auto'); default: in-process, sequential")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="Ray actors (default: the cluster's GPUs for engines, else CPUs / --cpus-per-worker)")
    g.add_argument("--cpus-per-worker", type=positive_float, default=1.0, help="CPUs reserved per Ray actor (default 1)")
    g.add_argument("--retries", type=non_negative_int, default=2, help="extra attempts for a failed scene (default 2)")
    add_scene_options(p)  # the same tiling, band and value options as `asanet-rt classify`
    p.add_argument("--no-sidecars", action="store_true", help="do not write the .qml style and .aux.xml table")
    g = p.add_argument_group("reporting")
    g.add_argument("--summary", default=None, metavar="PATH",
                   help="batch summary JSON (default OUTDIR/batch_summary.json)")
    add_quiet_option(g, "line per finished scene")
    add_json_options(g, "the summary")
    p.set_defaults(func=run_batch_command)


def run_batch_command(args: argparse.Namespace) -> int:
    """Run ``batch``; exit status 1 when some scene failed, errors as AsanetError."""
    from .batch import BatchConfig, format_summary, run_batch

    options = dict(scene_options(args), sidecars=not args.no_sidecars)
    config = BatchConfig(model=args.model, backend=args.backend, device=args.device, threads=args.threads,
                         options=options, retries=args.retries, ray=args.ray, workers=args.workers,
                         cpus_per_worker=args.cpus_per_worker, progress=not args.quiet,
                         allow_host_code=args.allow_engine_host_code)
    summary = run_batch(args.manifest, args.outdir, config, summary_path=args.summary)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    sys.stdout.flush()
    return 1 if summary["failed"] else 0
