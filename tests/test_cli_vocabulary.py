"""One CLI vocabulary: every subcommand's options have help text, no abbreviations, one meaning per flag name."""
from __future__ import annotations

import argparse
import warnings

import pytest

from asanet_rt import cli_options as co
from asanet_rt.cli import build_parser, main

RUNTIME = ("classify", "batch", "eval")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}


def test_every_option_has_help_and_no_parser_abbreviates():
    commands = subparsers()
    assert {"info", "export", "compare", "build", "inspect", "classify", "batch", "bench", "eval"} <= set(commands)
    assert build_parser().allow_abbrev is False
    missing = []
    for name, p in commands.items():
        assert p.allow_abbrev is False, name
        for a in p._actions:
            if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip()):
                missing.append(f"{name} {a.option_strings or a.dest}")
    assert not missing, missing


def test_one_meaning_per_flag_name():
    commands = subparsers()
    kinds = {"--tile": {co.positive_int, co.int_list, co.parse_range}, "--batch": {co.positive_int, co.int_list,
                                                                                   co.parse_range},
             "--threads": {co.threads}, "--device": {co.non_negative_int}, "--sar-band": {co.positive_int}}
    for name, p in commands.items():
        opts = options(p)
        for flag, allowed in kinds.items():
            if flag in opts:
                assert opts[flag].type in allowed, (name, flag, opts[flag].type)
        if "--optical-bands" in opts and name in RUNTIME + ("compare",):
            assert opts["--optical-bands"].type is co.band_numbers, name
        if "--backend" in opts:
            assert opts["--backend"].type.__name__ == "backend" and "onnxruntime" in opts["--backend"].help \
                or name == "build", name
        if "--json" in opts:
            assert opts["--json"].help.startswith("print ") and "stdout" in opts["--json"].help, name
        if "--no-progress" in opts:
            assert opts["--no-progress"].dest == opts["-q"].dest == "quiet", name
    # the range syntax is one function for every profile option
    assert options(commands["export"])["--tile"].type is options(commands["build"])["--tile"].type is co.parse_range


@pytest.mark.parametrize("argv", [
    ["classify", "o.tif", "s.tif", "-o", "x.tif", "--model", "m.onnx", "--quicklook-size", "0"],
    ["classify", "o.tif", "s.tif", "-o", "x.tif", "--model", "m.onnx", "--threads", "-3"],
    ["classify", "o.tif", "s.tif", "-o", "x.tif", "--model", "m.onnx", "--sar-scal", "db:-25:0"],
    ["classify", "o.tif", "s.tif", "-o", "x.tif", "--model", "m.onnx", "--sar-band", "0"],
    ["classify", "o.tif", "s.tif", "-o", "x.tif", "--model", "m.onnx", "--optical-bands", "red,green,blue"],
    ["classify", "o.tif", "s.tif", "-o", "x.tif", "--model", "m.onnx", "--backend", "tflite"],
    ["batch", "m.csv", "-o", "out", "--model", "m.onnx", "--workers", "0"],
    ["export", "c.pth", "-o", "x.onnx", "--tile", "512:256"],
    ["export", "c.pth", "-o", "x.onnx", "--optical-bands", "3,2,1"],
    ["build", "m.onnx", "--backend", "onnxruntime"],
    ["bench", "m.onnx", "--tile", "0"],
    ["eval", "m.onnx", "--data", "d", "--limit", "-1"],
])
def test_bad_values_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_calib_does_not_swallow_the_checkpoint():
    args = build_parser().parse_args(["export", "--precision", "int8", "--calib", "a.tif,b.tif", "ckpt.pth", "-o",
                                      "x.onnx", "--calib", "folder"])
    assert args.checkpoint == "ckpt.pth" and args.calib == ["a.tif,b.tif", "folder"]


def test_export_band_names_and_the_old_spelling(capsys):
    args = build_parser().parse_args(["export", "c.pth", "-o", "x.onnx", "--input-bands", "red,green,blue"])
    assert args.optical_bands == ("red", "green", "blue") and capsys.readouterr().err == ""
    args = build_parser().parse_args(["export", "c.pth", "-o", "x.onnx", "--optical-bands", "red,green,blue"])
    assert args.optical_bands == ("red", "green", "blue")
    assert "--optical-bands is deprecated; use --input-bands" in capsys.readouterr().err


def test_ranges_and_lists():
    assert co.parse_range("8") == (8, 8, 8) and co.parse_range("1:8") == (1, None, 8)
    assert co.parse_range("128:256:512") == (128, 256, 512)
    for bad in ("0:8", "8:1", "1:9:8", "a", "1:2:3:4"):
        with pytest.raises(argparse.ArgumentTypeError):
            co.parse_range(bad)
    assert co.int_list("1, 4,8") == (1, 4, 8)
    with pytest.raises(argparse.ArgumentTypeError, match="belong to `asanet-rt export --input-bands`"):
        co.band_numbers("red,green,blue")


def test_quiet_and_old_no_progress(capsys):
    base = ["classify", "o.tif", "s.tif", "-o", "x.tif", "--model", "m.onnx"]
    assert build_parser().parse_args(base + ["-q"]).quiet is True
    assert build_parser().parse_args(base).quiet is False
    assert build_parser().parse_args(base + ["--no-progress"]).quiet is True
    assert "--no-progress is deprecated; use -q/--quiet" in capsys.readouterr().err


def test_backend_aliases_become_canonical_names():
    base = ["classify", "o.tif", "s.tif", "-o", "x.tif", "--model", "m.onnx", "--backend"]
    assert build_parser().parse_args(base + ["ort"]).backend == "onnxruntime"
    assert build_parser().parse_args(base + ["rtx"]).backend == "tensorrt_rtx"
    assert build_parser().parse_args(["build", "m.onnx", "--backend", "trt"]).backend == "tensorrt"
    assert build_parser().parse_args(["eval", "m.pth", "--data", "d", "--backend", "eager"]).backend == "torch"


def test_json_flag_and_the_old_file_form(capsys):
    args = build_parser().parse_args(["bench", "a.onnx", "--json"])
    assert co.json_request(args) == (True, None, None)
    args = build_parser().parse_args(["bench", "a.onnx", "--json", "r.json"])
    assert co.json_request(args) == (False, "r.json", None)
    assert "--json r.json is deprecated; use --json-out r.json" in capsys.readouterr().err
    args = build_parser().parse_args(["bench", "--json", "a.onnx", "b.onnx"])
    assert co.json_request(args) == (True, None, "a.onnx") and args.models == ["b.onnx"]
    args = build_parser().parse_args(["eval", "m.onnx", "--data", "d", "--json-out", "m.json"])
    assert co.json_request(args) == (False, "m.json", None)


def test_help_lists_the_backends(capsys):
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "onnxruntime (ort" in out and "tensorrt_rtx (rtx" in out


def test_export_tile_range_holds_the_native_tile():
    from asanet_rt.export.onnx_export import ExportOptions, TileRangeWarning
    from asanet_rt.metadata import ModelMetadata

    class Meta:  # the two fields for_model reads
        native_tile = 128

    assert ExportOptions().for_model(Meta()).tile == (128, 1024)
    Meta.native_tile = 512
    assert ExportOptions().for_model(Meta()).tile == (256, 1024)
    Meta.native_tile = 128
    with pytest.warns(TileRangeWarning, match="excludes the model's native tile 128"):
        ExportOptions(tile=(256, 512)).for_model(Meta())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ExportOptions(tile=(128, 512)).for_model(Meta())
    assert ModelMetadata  # imported for the real type the options take


def test_classify_warns_when_tiling_off_the_native_tile(tmp_path):
    from toy_models import make_toy_onnx

    from asanet_rt.classifier import Classifier, TileSizeWarning

    with Classifier.open(make_toy_onnx(tmp_path / "toy.onnx")) as clf:
        lo, hi = clf.tile_range
        native = clf.metadata.native_tile
        assert lo <= native <= hi
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert clf.tile_settings().tile == native and clf.tile_settings(native).tile == native
            assert clf.default_batch == 1
        with pytest.warns(TileSizeWarning, match=f"not at the model's native tile {native}"):
            clf.tile_settings(hi if hi != native else lo)
    # an export whose range excludes the native tile
    with Classifier.open(make_toy_onnx(tmp_path / "small.onnx", tile=(32, 64))) as clf:
        native = clf.metadata.native_tile
        with pytest.warns(TileSizeWarning, match=f"native tile {native} is outside the tile range"):
            assert clf.tile_settings().tile == 64
