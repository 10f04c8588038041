"""``asanet-rt bench`` and ``asanet-rt eval``: argument parsing only; the work is in ``bench`` and ``evaluate``."""
from __future__ import annotations

import argparse
import sys

from .cli_options import (BACKEND_NAMES, add_backend_option, add_engine_trust_option, add_json_options,
                          add_quiet_option, backend_help,
                          band_numbers, command, int_list, json_request, non_negative_int, positive_float,
                          positive_int, threads)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` and ``eval`` subcommands."""
    register_bench(sub)
    register_eval(sub)


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "bench", help="time checkpoints, ONNX files and engines side by side",
        description="Time any mix of checkpoints (torch eager, the usual baseline), ONNX files (ONNX Runtime; "
                    "OpenVINO with --openvino or MODEL@openvino) and TensorRT / RTX engines on the same random "
                    "inputs. Ratios compare every model with the FIRST one. Each model runs in a fresh "
                    "subprocess so its peak RSS is its own.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="checkpoint (.pth/.safetensors), .onnx or engine; MODEL@BACKEND picks the backend: "
                        + backend_help(BACKEND_NAMES, "by file type"))
    p.add_argument("--batch", type=int_list, default=(1,), metavar="N[,N...]",
                   help="batch sizes, each timed, comma list (default 1)")
    p.add_argument("--tile", type=int_list, default=(256,), metavar="PX[,PX...]",
                   help="tile edges in px, each timed, comma list (default 256)")
    p.add_argument("--warmup", type=non_negative_int, default=3,
                   help="untimed calls before each timed loop (default 3)")
    p.add_argument("--iterations", type=positive_int, default=100,
                   help="at most this many timed calls per figure (default 100)")
    p.add_argument("--time-budget", type=positive_float, default=5.0, metavar="S",
                   help="stop a timed loop after S seconds (at least --min-iterations calls; default 5)")
    p.add_argument("--min-iterations", type=positive_int, default=3, help="timed calls even past the budget (default 3)")
    p.add_argument("--threads", type=threads, default=0,
                   help="CPU threads for every backend (torch, ONNX Runtime, OpenVINO); default: physical cores")
    p.add_argument("--mode", choices=("both", "e2e", "compute"), default="both",
                   help="e2e (numpy in/out), compute (device-resident I/O) or both (default)")
    p.add_argument("--torch-compile", action="store_true", help="run checkpoints with torch.compile")
    p.add_argument("--torch-device", default="cpu", help="device of checkpoint runs: cpu (default) or cuda[:N]")
    p.add_argument("--openvino", action="store_true",
                   help="also run every ONNX file on OpenVINO's CPU plugin (pip install 'asanet-rt[openvino]')")
    p.add_argument("--openvino-precision", default="f32", choices=("f32", "bf16", "f16", "auto"),
                   help="OpenVINO INFERENCE_PRECISION_HINT (default f32: no silent bf16 on CPUs that have it)")
    p.add_argument("--device", type=non_negative_int, default=0, help="GPU index for GPU backends (default 0)")
    add_engine_trust_option(p)
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random input tiles (default 0)")
    p.add_argument("--in-process", action="store_true",
                   help="run every model in this process (faster start; peak RSS then is not per model)")
    p.add_argument("--no-samples", action="store_true", help="leave per-call latencies out of the JSON")
    add_json_options(p, "the full report (schema in the README)", file_form=True)
    p.add_argument("--markdown", metavar="PATH", help="write the table as markdown")
    p.add_argument("--plot", metavar="PATH", help="write a PNG: latency distributions and throughput (matplotlib)")
    add_quiet_option(p, "progress lines")
    p.add_argument("--pick", action="store_true",
                   help="only print the backend `auto` picks for each ONNX model at the first --tile/--batch "
                        "(what classify runs), with the timings it compared, and exit")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    to_stdout, json_out, stray = json_request(args)
    if stray is not None:  # `--json MODEL ...`: the flag form followed by the first model
        args.models.insert(0, stray)
    settings = bench.BenchSettings(
        batches=args.batch, tiles=args.tile, warmup=args.warmup, iterations=args.iterations,
        time_budget_s=args.time_budget, min_iterations=args.min_iterations, threads=args.threads, mode=args.mode,
        seed=args.seed, device=args.device, torch_device=args.torch_device,
        openvino_precision=args.openvino_precision, isolate=not args.in_process, keep_samples=not args.no_samples,
        allow_engine_host_code=args.allow_engine_host_code)
    if args.pick:
        from .backends.auto import choose_backend

        for model in args.models:
            name, choice = choose_backend(model, "auto", tile=args.tile[0], batch=args.batch[0],
                                          threads=args.threads or None)
            print(f"{model}: {name}" + (f" ({choice.reason})" if choice else " (not an ONNX file: by file type)"))
        return 0
    report = bench.run_benchmark(args.models, settings, torch_compile=args.torch_compile, openvino=args.openvino,
                                 quiet=args.quiet)
    if to_stdout:
        import json

        print(json.dumps(report, indent=2, default=str))
    else:
        print(bench.format_table(report))
    if json_out:
        bench.write_json(report, json_out)
    if args.markdown:
        bench.write_markdown(report, args.markdown)
    if args.plot:
        bench.plot_report(report, args.plot)
    return 1 if any(m.get("error") for m in report["models"]) else 0


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "eval", help="mIoU, per-class IoU/F1, OA, kappa and confusion matrix on a labelled dataset",
        description="Score a checkpoint, ONNX file or engine on a labelled optical + SAR dataset with mmseg's "
                    "IoU metric. Layouts: the official WHU-OPT-SAR, PIE-RGB-SAR and DDHR-SK folders, or "
                    "DIR/{optical,sar,label}/NAME.tif (--layout folder).")
    p.add_argument("model", metavar="MODEL", nargs="?", help="checkpoint (.pth/.safetensors), .onnx or engine")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset root folder")
    p.add_argument("--layout", default="auto", choices=("auto", "folder", "whu-opt-sar", "pie-rgb-sar", "ddhr-sk"),
                   help="folder layout (default: detected from the subfolder names)")
    p.add_argument("--split", help="WHU-OPT-SAR: split subfolder (default test); PIE/DDHR: name list SPLIT.txt "
                                   "(default val, all images when absent)")
    add_backend_option(p, BACKEND_NAMES, "by file type")
    p.add_argument("--batch", type=positive_int, default=4, metavar="N",
                   help="images of equal size per inference call (default 4)")
    p.add_argument("--threads", type=threads, default=0, help="CPU threads (default 0: physical cores)")
    p.add_argument("--device", type=non_negative_int, default=0, help="GPU index for GPU backends (default 0)")
    add_engine_trust_option(p)
    p.add_argument("--torch-device", default="cpu", help="device of a checkpoint run: cpu or cuda[:N]")
    p.add_argument("--optical-bands", type=band_numbers, metavar="B,B,B",
                   help="1-based band numbers of the optical files, in the model's band order, e.g. 4,3,2 "
                        "(default: by colour name; bands 1,2,3 = red, green, blue when the file does not say)")
    p.add_argument("--optical-scale", default="auto", help="runtime scaling spec (auto, none, reflectance:0:3000 ...)")
    p.add_argument("--sar-scale", default="auto", help="runtime scaling spec (auto, none, db:-25:0 ...)")
    p.add_argument("--sar-band", type=positive_int, default=1, help="1-based SAR band (default 1)")
    p.add_argument("--ignore-index", type=non_negative_int, default=255, help="label value that is not scored (default 255)")
    p.add_argument("--label-map", metavar="MAP",
                   help="label values -> classes: identity, whu, reduce-zero, VALUE:CLASS pairs (1:0,2:1,...; "
                        "CLASS may be 'ignore') or a file of pairs (.json, or two columns); values an explicit "
                        "map leaves out are not scored (default: whu for WHU-OPT-SAR, identity otherwise)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="score only the first N images (a quick check)")
    add_json_options(p, "metrics and confusion matrix", file_form=True)
    p.add_argument("--plot", metavar="PATH", help="write the confusion matrix as a PNG (matplotlib)")
    add_quiet_option(p, "progress bar")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from .errors import AsanetError
    from .evaluate import evaluate, plot_confusion, write_eval_json

    to_stdout, json_out, stray = json_request(args)
    if stray is not None:  # `--json MODEL`: the flag form followed by the model
        if args.model is not None:
            raise AsanetError(f"{stray!r}: one MODEL only (a --json file must end in .json; or use --json-out)")
        args.model = stray
    if args.model is None:
        raise AsanetError("give the MODEL to score (checkpoint, .onnx or engine)")
    bands = args.optical_bands
    result = evaluate(args.model, args.data, layout=args.layout, split=args.split, backend=args.backend,
                      batch=args.batch, threads=args.threads, device=args.device, torch_device=args.torch_device,
                      optical_bands=bands, optical_scale=args.optical_scale, sar_scale=args.sar_scale,
                      sar_band=args.sar_band, ignore_index=args.ignore_index, label_map=args.label_map,
                      limit=args.limit, progress=not args.quiet and sys.stderr.isatty(),
                      allow_host_code=args.allow_engine_host_code)
    if to_stdout:
        import json

        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(result.format())
    if json_out:
        write_eval_json(result, json_out)
    if args.plot:
        plot_confusion(result.scores, args.plot)
    return 0

