"""Real TensorRT-RTX builds on the CPU (no GPU needed): toy ONNX in fp32, fp16, int8 Q/DQ and with an asanet local
function; the CLI end to end; failed builds leave no file; the timing cache logic. Each build takes well under a
second here (2 CPU cores), so none is marked slow."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnx")
trt = pytest.importorskip("tensorrt_rtx")

from asanet_rt.cli import main  # noqa: E402
from asanet_rt.engine_file import NO_GPU, read_engine, read_engine_info  # noqa: E402
from asanet_rt.engines.builder import (_attach_timing_cache, _save_timing_cache, build_engine,  # noqa: E402
                                       default_ranges)
from asanet_rt.errors import AsanetError  # noqa: E402
from asanet_rt.onnx_info import read_onnx_info  # noqa: E402
from engine_toys import (TOY, make_fp16_toy, make_function_toy, make_int8_toy,  # noqa: E402
                         make_unparsable_toy)
from toy_models import make_toy_onnx, toy_metadata  # noqa: E402

SMALL = [{"batch": (1, 2, 2), "tile": (32, 64, 128)}]
SMALL_SHAPES = {"min": [1, 3, 32, 32], "opt": [2, 3, 64, 64], "max": [2, 3, 128, 128]}


def build(onnx: Path, out: Path, **kwargs: Any):
    kwargs.setdefault("profiles", SMALL)
    return build_engine(onnx, out, backend="tensorrt_rtx", progress=False, **kwargs)


def check_engine(path: Path, precision: str) -> None:
    info, plan = read_engine(path)
    assert len(plan) > 100_000, "a real engine, not a stub"
    assert info.backend == "tensorrt_rtx" and info.backend_version == trt.__version__
    assert info.precision == precision
    assert info.profiles[0]["optical"] == SMALL_SHAPES
    assert info.profiles[0]["sar"]["max"] == [2, 1, 128, 128]
    assert info.model.export["batch"] == [1, 2] and info.model.export["tile"] == [32, 128]
    assert info.builder["onnx_batch"] == [1, 8] and info.builder["onnx_tile"] == [32, 512]
    assert len(info.onnx_sha256) == 64 and info.model.export["onnx_sha256"] == info.onnx_sha256
    assert [t["name"] for t in info.inputs] == ["optical", "sar"]
    assert {t["name"]: t["dtype"] for t in info.outputs}["classes"] == "uint8"
    assert info.compatibility["rtx_targets"] == [] and info.plugins["mode"] == "none"


def test_build_fp32(tmp_path: Path) -> None:
    onnx = make_toy_onnx(tmp_path / "toy.onnx", **TOY)
    out = tmp_path / "toy.engine"
    info = build(onnx, out)
    check_engine(out, "fp32")
    assert read_engine_info(out) == info
    assert info.compute_capability == NO_GPU or info.compute_capability.startswith("n/a")
    assert info.builder["strongly_typed"] is True and info.build_seconds > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_build_fp16_cast_in_graph(tmp_path: Path) -> None:
    onnx = make_fp16_toy(tmp_path)
    assert read_onnx_info(onnx).precision == "fp16"
    info = build(onnx, tmp_path / "fp16.engine")
    check_engine(tmp_path / "fp16.engine", "fp16")
    assert info.export_precision == "fp16"


def test_build_int8_qdq(tmp_path: Path) -> None:
    onnx = make_int8_toy(tmp_path)
    assert read_onnx_info(onnx).precision == "int8"
    build(onnx, tmp_path / "int8.engine")
    check_engine(tmp_path / "int8.engine", "int8")


def test_build_inlines_asanet_local_function(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx = make_function_toy(tmp_path)
    onnx_info = read_onnx_info(onnx)
    assert onnx_info.ops_flavour == "plugins" and onnx_info.asanet_ops == {"Normalize": 1}
    assert onnx_info.local_functions == ["asanet.Normalize"]
    with caplog.at_level(logging.INFO):
        build(onnx, tmp_path / "function.engine")
    check_engine(tmp_path / "function.engine", "fp32")
    assert "inlines" in caplog.text
    with pytest.raises(AsanetError, match="TensorRT-RTX has no plugin layers"):
        build(onnx, tmp_path / "v3.engine", plugin_mode="v3")
    assert not (tmp_path / "v3.engine").exists()


def test_plugin_annotation_falls_back_to_the_local_function(tmp_path: Path) -> None:
    """The node attributes that route asanet ops to plugins on TensorRT still parse when no plugin is registered."""
    from asanet_rt.engines.builder import _annotated_onnx

    data = _annotated_onnx(make_function_toy(tmp_path), "aot")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(data), [str(parser.get_error(i)) for i in range(parser.num_errors)]


def test_failed_build_leaves_no_file(tmp_path: Path) -> None:
    bad = make_unparsable_toy(tmp_path)
    out = tmp_path / "bad.engine"
    with pytest.raises(AsanetError) as exc:
        build(bad, out)
    assert "node 5 'mystery_node' (MysteryOp)" in str(exc.value) and str(bad) in str(exc.value)
    assert not out.exists()
    # an existing engine survives a failed rebuild, even with overwrite
    good = build(make_toy_onnx(tmp_path / "toy.onnx", **TOY), out)
    before = out.read_bytes()
    with pytest.raises(AsanetError):
        build(bad, out, overwrite=True)
    assert out.read_bytes() == before and read_engine_info(out) == good
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not protobuf \xff\xff")
    with pytest.raises(AsanetError, match="garbage.onnx"):
        build(garbage, tmp_path / "garbage.engine")
    assert not (tmp_path / "garbage.engine").exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    onnx = make_toy_onnx(tmp_path / "toy.onnx", **TOY)
    out = tmp_path / "toy.engine"
    out.write_bytes(b"keep me")
    with pytest.raises(AsanetError, match="exists"):
        build(onnx, out)
    assert out.read_bytes() == b"keep me"


def test_profile_validation(tmp_path: Path) -> None:
    onnx = make_toy_onnx(tmp_path / "toy.onnx", **TOY)
    with pytest.raises(AsanetError, match="multiples of 32"):
        build(onnx, tmp_path / "a.engine", profiles=[{"tile": (32, 48, 64)}])
    with pytest.raises(AsanetError, match="MIN <= OPT <= MAX"):
        build(onnx, tmp_path / "a.engine", profiles=[{"batch": (4, 2, 8)}])
    assert default_ranges(toy_metadata()) == ((1, 8, 8), (32, 512, 512))
    with pytest.raises(AsanetError, match="--dla-core"):
        build(onnx, tmp_path / "a.engine", dla_core=0)
    with pytest.raises(AsanetError, match="strongly typed"):
        build(onnx, tmp_path / "a.engine", legacy_precision_flags="fp16")
    assert not (tmp_path / "a.engine").exists()


def test_cli_build_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx = make_toy_onnx(tmp_path / "toy.onnx", **TOY)
    out = tmp_path / "toy.engine"
    assert main(["build", str(onnx), "-o", str(out), "--backend", "tensorrt_rtx", "--batch", "1:2:2",
                 "--tile", "32:64:128", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "TensorRT-RTX" in printed
    import hashlib

    file_sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256 {file_sha}" in printed  # what a user puts in the trusted-engines list
    check_engine(out, "fp32")
    assert main(["inspect", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file_sha256"] == file_sha and data["engine_sha256"] == hashlib.sha256(read_engine(out)[1]).hexdigest()
    assert data["kind"] == "engine" and data["profiles"][0]["optical"] == SMALL_SHAPES
    assert data["metadata"]["classes"] == list(toy_metadata().classes) and data["precision"] == "fp32"
    assert main(["inspect", str(out), "--extract-plan", str(tmp_path / "toy.plan")]) == 0
    text = capsys.readouterr().out
    assert "built by" in text and "profile 0" in text and "class_0" in text
    assert (tmp_path / "toy.plan").read_bytes() == read_engine(out)[1]
    assert main(["inspect", str(onnx), "--json", "--layers"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "onnx" and data["ops_flavour"] == "portable" and data["layers"]["Conv"] == 2
    assert [i["name"] for i in data["inputs"]] == ["optical", "sar"]
    # errors: exit 2 with the file named, nothing written
    assert main(["build", str(onnx), "-o", str(out), "--backend", "tensorrt_rtx"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["build", str(onnx), "-o", str(tmp_path / "x.engine"), "--backend", "tensorrt_rtx",
                 "--tile", "32:50:64"]) == 2
    assert "multiples of 32" in capsys.readouterr().err and not (tmp_path / "x.engine").exists()


class _FakeCache:
    def __init__(self, data: bytes) -> None:
        self.entries = set(data.split(b",")) - {b""}

    def combine(self, other: "_FakeCache", ignore_mismatch: bool) -> bool:
        self.entries |= other.entries
        return True

    def serialize(self) -> bytes:
        return b",".join(sorted(self.entries))


class _FakeConfig:
    """The timing-cache part of IBuilderConfig, recording a new tactic the way a build would."""

    def create_timing_cache(self, data: bytes) -> _FakeCache:
        return _FakeCache(bytes(data))

    def set_timing_cache(self, cache: _FakeCache, ignore_mismatch: bool) -> bool:
        cache.entries.add(b"tactic%d" % len(cache.entries))
        return True


class _FakeBackend:
    is_rtx = False


def test_timing_cache_written_reused_and_merged(tmp_path: Path) -> None:
    path = tmp_path / "timing.cache"
    config = _FakeConfig()
    cache, loaded = _attach_timing_cache(_FakeBackend(), config, path)
    assert loaded == b""
    _save_timing_cache(config, cache, path, loaded)
    assert path.read_bytes() == b"tactic0"
    cache, loaded = _attach_timing_cache(_FakeBackend(), config, path)   # reused: starts from the saved entries
    assert loaded == b"tactic0" and cache.entries == {b"tactic0", b"tactic1"}
    path.write_bytes(b"tactic0,other_build")                              # another build saved meanwhile
    _save_timing_cache(config, cache, path, loaded)
    assert path.read_bytes() == b"other_build,tactic0,tactic1"


def test_timing_cache_is_skipped_on_rtx(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx = make_toy_onnx(tmp_path / "toy.onnx", **TOY)
    with caplog.at_level(logging.INFO):
        build(onnx, tmp_path / "toy.engine", timing_cache=tmp_path / "timing.cache")
    assert "TensorRT-RTX has no timing cache" in caplog.text
    assert not (tmp_path / "timing.cache").exists()
