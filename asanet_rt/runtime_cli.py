"""The runtime's subcommand: ``asanet-rt classify OPTICAL.tif SAR.tif -o landcover.tif --model model.onnx``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from .cli_options import (add_backend_option, add_engine_trust_option, add_json_options, add_quiet_option,
                          band_numbers, command, fraction, non_negative_int,
                          number_or_none, positive_int, threads)

log = logging.getLogger(__name__)

_EPILOG = """\
scaling (models expect 0-255 values):
  --optical-scale auto                uint8 as is (other types must be named explicitly)
  --optical-scale reflectance:0:3000  Sentinel-2 L2A (reflectance x 10000): 0..3000 -> 0..255, clipped
  --sar-scale db:-25:0                Sentinel-1 backscatter in dB: -25..0 dB -> 0..255, clipped
  --sar-scale linear-power:-25:0      linear sigma0, converted to dB first
  --sar-scale none                    values already on a 0-255 scale

examples:
  asanet-rt classify s2_rgb.tif s1.tif -o landcover.tif --model model.onnx
  asanet-rt classify s2_l2a.tif s1_db.tif -o lc.tif --model model.onnx --optical-bands 4,3,2 \\
      --optical-scale reflectance:0:3000 --sar-scale db:-25:0 --confidence conf.tif --quicklook lc.png
"""


def add_scene_options(p: argparse.ArgumentParser) -> None:
    """Tiling, band and value options shared by ``classify`` and ``batch``; read back with ``scene_options``."""
    g = p.add_argument_group("tiling")
    g.add_argument("--tile", type=positive_int, default=None, metavar="PX",
                   help="tile edge in px (default: the model's native tile, at least 512; asking for another "
                        "size than the native tile gives a warning)")
    g.add_argument("--overlap", type=non_negative_int, default=None, metavar="PX",
                   help="overlap between tiles in px, rounded up to a 32 px step (default: 192)")
    g.add_argument("--batch", type=positive_int, default=None, metavar="N",
                   help="tiles per inference call (default: up to 8)")
    g = p.add_argument_group("input bands and values")
    g.add_argument("--optical-bands", type=band_numbers, default=None, metavar="B,B,B",
                   help="1-based band numbers of the optical file, in the model's band order, e.g. 4,3,2 "
                        "(default: from the band descriptions or colour tags; see the README)")
    g.add_argument("--sar-band", type=positive_int, default=1, metavar="B", help="1-based SAR file band (default 1)")
    g.add_argument("--optical-scale", default="auto", help="auto | none | reflectance:MIN:MAX | linear:MIN:MAX")
    g.add_argument("--sar-scale", default="auto", help="auto | none | db:MIN:MAX | linear-power:MIN:MAX | "
                                                       "linear-amplitude:MIN:MAX")
    g.add_argument("--optical-nodata", type=number_or_none, default=None,
                   help="optical nodata value (default: the file's)")
    g.add_argument("--sar-nodata", type=number_or_none, default=None, help="SAR nodata value (default: the file's)")
    # checked by asanet_rt.scene (importing it here would load rasterio for `asanet-rt --help`)
    g.add_argument("--sar-resampling", default="bilinear", metavar="METHOD",
                   help="resampling of SAR onto the optical grid when the grids differ: nearest, bilinear "
                        "(default), cubic, cubic_spline, lanczos, average, mode, min, max, med")
    g.add_argument("--allow-empty", action="store_true",
                   help="write an all-nodata map when no pixel has both sensors (default: an error)")


def runtime_backends() -> tuple[str, ...]:
    """The canonical backend names the runtime can open (every row of the registry)."""
    from .cli_options import BACKEND_NAMES

    return BACKEND_NAMES


def scene_options(args: argparse.Namespace) -> dict:
    """The ``classify_scene`` keyword arguments that ``add_scene_options`` defines."""
    return dict(tile=args.tile, overlap=args.overlap, batch=args.batch, optical_bands=args.optical_bands,
                sar_band=args.sar_band, optical_scale=args.optical_scale, sar_scale=args.sar_scale,
                optical_nodata=args.optical_nodata, sar_nodata=args.sar_nodata, sar_resampling=args.sar_resampling,
                allow_empty=args.allow_empty)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``classify`` subcommand."""
    p = command(
        subparsers, "classify", help="classify an optical + SAR GeoTIFF pair into a land-cover COG",
        description="Classify an optical + SAR GeoTIFF pair into a Cloud-Optimized GeoTIFF land-cover map on the "
                    "optical raster's grid (SAR on another grid is resampled onto it). Tiles overlap and are "
                    "blended on probabilities, so no seams appear.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("optical", help="optical GeoTIFF (3 bands, or pick them with --optical-bands), a GDAL path "
                                   "(/vsizip/..., /vsicurl/...), or a comma list of single-band files")
    p.add_argument("sar", help="SAR GeoTIFF (one band used, --sar-band)")
    p.add_argument("-o", "--output", required=True, help="land-cover COG to write (uint8 classes, 255 = nodata)")
    p.add_argument("--model", required=True, help="model: .onnx (ONNX Runtime) or .engine (TensorRT)")
    add_backend_option(p, runtime_backends(), "by file type")
    p.add_argument("--device", type=non_negative_int, default=0, help="GPU index for GPU backends (default 0)")
    p.add_argument("--threads", type=threads, default=None,
                   help="CPU threads of CPU backends (ONNX Runtime, OpenVINO, torch; default 0: physical cores)")
    add_engine_trust_option(p)
    add_scene_options(p)
    g = p.add_argument_group("outputs")
    g.add_argument("--confidence", default=None, metavar="PATH", help="also write the confidence map (COG)")
    g.add_argument("--confidence-dtype", default="float32", choices=("float32", "uint8"),
                   help="float32 probabilities (NaN nodata) or uint8 round(255 p) (0 nodata)")
    g.add_argument("--probabilities", default=None, metavar="PATH",
                   help="also write every class's blended probability (float32 COG, one band per class)")
    g.add_argument("--quicklook", default=None, metavar="PATH", help="also write a PNG quick-look with a legend")
    g.add_argument("--quicklook-size", type=positive_int, default=1024, metavar="PX",
                   help="longest side of the quick-look's map in px (default 1024)")
    g.add_argument("--quicklook-alpha", type=fraction, default=0.6,
                   help="map opacity over the optical image (1: map only; default 0.6)")
    g.add_argument("--no-sidecars", action="store_true", help="do not write the .qml style and .aux.xml table")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_quiet_option(g, "progress bar")
    add_json_options(g, "the summary")
    p.set_defaults(func=run_classify)


def run_classify(args: argparse.Namespace) -> int:
    """Run ``classify``; errors are AsanetError and reported by ``asanet_rt.cli.main``."""
    from dataclasses import asdict

    from .classifier import Classifier
    from .preflight import check_outputs
    from .scene import split_optical

    from .sinks import default_outputs

    outputs = default_outputs(args.output, confidence=args.confidence, confidence_dtype=args.confidence_dtype,
                              probabilities=args.probabilities, quicklook=args.quicklook,
                              quicklook_size=args.quicklook_size, quicklook_alpha=args.quicklook_alpha,
                              sidecars=not args.no_sidecars)
    # refused before the model loads: an output that is a folder, exists, or cannot be written
    check_outputs([s.path for s in outputs], [*split_optical(args.optical), args.sar], overwrite=args.overwrite)
    # --threads goes to the runner as given: the registry refuses it for backends without CPU threads
    with warnings.catch_warnings(record=True) as caught, \
            Classifier.open(args.model, backend=args.backend, device=args.device, threads=args.threads,
                            allow_host_code=args.allow_engine_host_code or None, tile=args.tile,
                            batch=args.batch) as clf:
        warnings.simplefilter("always")
        summary = clf.classify_scene(args.optical, args.sar, outputs=outputs, **scene_options(args),
                                     overwrite=args.overwrite, progress=not args.quiet)
    for w in caught:  # the summary repeats the range warnings; the others go to stderr here
        if str(w.message) not in summary.warnings:
            print(f"asanet-rt classify: warning: {w.message}", file=sys.stderr)
    if args.json:
        data = asdict(summary)
        data["megapixels_per_second"] = summary.megapixels_per_second
        data["backend_reason"] = clf.backend_reason
        print(json.dumps(data, indent=2))
    else:
        print(summary.format())
        # which backend ran and why (auto: the probe's ranking); --verbose
        print(f"backend {clf.backend}" + (f": {clf.backend_reason}" if getattr(args, "verbose", False) else ""))
    sys.stdout.flush()
    return 0
