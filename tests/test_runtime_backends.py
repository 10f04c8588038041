"""The ONNX Runtime runner and ``open_runner``'s dispatch, on the toy model."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest

from asanet_rt.backends import open_runner
from asanet_rt.backends.onnxruntime import OnnxRuntimeRunner, physical_cores
from asanet_rt.errors import AsanetError
from asanet_rt.metadata import METADATA_KEY, MetadataError

from runtime_helpers import random_pair, toy_model  # noqa: F401 - fixture
from toy_models import toy_reference


def test_onnx_runner_metadata_threads_and_uint8(toy_model):
    with open_runner(toy_model) as runner:
        assert isinstance(runner, OnnxRuntimeRunner)
        assert runner.backend == "onnxruntime" and runner.providers == ("CPUExecutionProvider",)
        assert runner.metadata.export["optical_bands"] == ["red", "green", "blue"]
        assert runner.output_names == ("logits",)
        assert runner.threads == physical_cores() >= 1
        opt, sar = random_pair(32, 64)
        out_u8 = runner.infer({"optical": opt[None], "sar": sar[None]})["logits"]
        out_f32 = runner.infer({"optical": opt[None].astype(np.float32), "sar": sar[None].astype(np.float32)})
        np.testing.assert_array_equal(out_u8, out_f32["logits"])
        np.testing.assert_allclose(out_u8, toy_reference(opt[None].astype(np.float32), sar[None].astype(
            np.float32)), atol=1e-4)
    runner.close()  # twice is fine
    with pytest.raises(AsanetError, match="closed"):
        runner.infer({"optical": opt[None], "sar": sar[None]})


def _rewrite_metadata(src, dst, edit):
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for key, value in edit(props).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst))
    return dst


def test_missing_metadata_is_a_clear_error(toy_model, tmp_path):
    bare = _rewrite_metadata(toy_model, tmp_path / "bare.onnx", lambda p: {})
    with pytest.raises(MetadataError, match=rf"bare\.onnx: no asanet-rt metadata .*{METADATA_KEY}"):
        open_runner(bare)


def test_newer_metadata_is_a_clear_error(toy_model, tmp_path):
    def newer(props):
        data = json.loads(props[METADATA_KEY])
        data["format_version"] = 99
        data["sdk_version"] = "9.0.0"
        return {METADATA_KEY: json.dumps(data)}

    path = _rewrite_metadata(toy_model, tmp_path / "future.onnx", newer)
    with pytest.raises(MetadataError, match=r"future\.onnx: .*newer than this asanet-rt.*upgrade"):
        open_runner(path)


def test_bad_model_files(tmp_path):
    with pytest.raises(AsanetError, match=r"nothere\.onnx: model file not found"):
        open_runner(tmp_path / "nothere.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(AsanetError, match=r"junk\.onnx: not a loadable ONNX model"):
        open_runner(junk)
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\0")
    with pytest.raises(AsanetError, match=r"model\.bin: unknown model file type"):
        open_runner(odd)
    with pytest.raises(AsanetError, match="backend 'nope'"):
        open_runner(junk, backend="nope")


def test_engine_without_tensorrt_module_is_a_clear_error(tmp_path, monkeypatch):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "asanet_rt.backends.tensorrt", None)  # import now fails as if absent
    with pytest.raises(AsanetError, match=r"model\.engine: TensorRT support is not part of this install"):
        open_runner(engine)
    with pytest.raises(AsanetError, match="backend onnxruntime runs onnx files; engine files run on tensorrt"):
        open_runner(engine, backend="onnxruntime")


def test_unavailable_provider_is_a_clear_error(toy_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    with pytest.raises(AsanetError, match="no CUDAExecutionProvider"):
        open_runner(toy_model, backend="onnxruntime-cuda")


def test_tensorrt_provider_profile_comes_from_the_metadata(tmp_path, monkeypatch):
    from toy_models import toy_metadata

    monkeypatch.setenv("ASANET_RT_CACHE", str(tmp_path))
    meta = toy_metadata(tile=(64, 256), batch=(1, 4), precision="fp16")
    providers = OnnxRuntimeRunner._gpu_providers("tensorrt", 1, meta, {"trt_max_workspace_size": 1 << 30},
                                                 tmp_path / "m.onnx")
    (trt, trt_opts), (cuda, cuda_opts) = providers
    assert trt == "TensorrtExecutionProvider" and cuda == "CUDAExecutionProvider"
    assert trt_opts["device_id"] == 1 and cuda_opts == {"device_id": 1} and trt_opts["trt_fp16_enable"]
    assert trt_opts["trt_profile_min_shapes"] == "optical:1x3x64x64,sar:1x1x64x64"
    assert trt_opts["trt_profile_opt_shapes"] == "optical:4x3x256x256,sar:4x1x256x256"  # native 512, clipped
    assert trt_opts["trt_profile_max_shapes"] == "optical:4x3x256x256,sar:4x1x256x256"
    assert trt_opts["trt_max_workspace_size"] == 1 << 30 and (tmp_path / "ort_trt").is_dir()


# -- the registry -------------------------------------------------------------------------------------------------
def test_one_table_names_every_backend_and_alias():
    from asanet_rt.backends import ALIASES, BACKEND_NAMES, canonical_name, get_backend

    assert set(BACKEND_NAMES) >= {"auto", "onnxruntime", "openvino", "onnxruntime-cuda", "onnxruntime-tensorrt",
                                  "tensorrt", "tensorrt_rtx", "torch"}
    for alias, name in {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt", "rtx": "tensorrt_rtx",
                        "tensorrt-rtx": "tensorrt_rtx", "ort-cuda": "onnxruntime-cuda", "eager": "torch"}.items():
        assert ALIASES[alias] == name and canonical_name(alias.upper()) == name
    assert get_backend("openvino").kind == "onnx" and get_backend("torch").kind == "checkpoint"
    with pytest.raises(AsanetError, match="backend 'tflite': choose one of auto, onnxruntime"):
        get_backend("tflite")


def test_file_kind_decides_which_backends_can_open_a_file(tmp_path):
    from asanet_rt.backends import backends_for, file_kind

    assert file_kind("m.ONNX") == "onnx" and file_kind("m.plan") == "engine" and file_kind("c.safetensors") == "checkpoint"
    with pytest.raises(AsanetError, match=r"m\.tflite: unknown model file type '\.tflite'"):
        file_kind("m.tflite")
    assert [s.name for s in backends_for("onnx", "cpu")] == ["onnxruntime", "openvino"]


def test_an_option_the_backend_does_not_take_is_refused_not_ignored(toy_model):
    with pytest.raises(AsanetError, match="backend onnxruntime does not take zero_copy"):
        open_runner(toy_model, backend="ort", zero_copy=True)
    with open_runner(toy_model, backend="ort", threads=None, zero_copy=None) as runner:  # None = not given
        assert runner.backend == "onnxruntime" and runner.device == "cpu"


def test_openvino_runs_the_same_file_with_the_same_numbers(toy_model):
    pytest.importorskip("openvino")
    rng = np.random.default_rng(3)
    feed = {"optical": rng.uniform(0, 255, (2, 3, 64, 96)).astype(np.float32),
            "sar": rng.uniform(0, 255, (2, 1, 64, 96)).astype(np.float32)}
    with open_runner(toy_model, "ort", threads=1) as ort, open_runner(toy_model, "openvino", threads=1) as ov:
        assert ov.backend == "openvino" and ov.output_names == ort.output_names
        assert ov.metadata == ort.metadata
        expected = ort.infer(feed)["logits"]
        np.testing.assert_allclose(ov.infer(feed)["logits"], expected, atol=1e-4)
        # a second shape compiles again; the first stays usable
        small = {k: v[:1, :, :32, :32] for k, v in feed.items()}
        np.testing.assert_allclose(ov.infer(small)["logits"], ort.infer(small)["logits"], atol=1e-4)
        call, timer = ov.compute_fn(feed)
        call()
        assert timer == "perf_counter_ns" and ov.runtime_info()["intra_op_threads"] == 1


def test_auto_follows_the_environment_for_onnx_files(toy_model, monkeypatch):
    from asanet_rt.backends import resolve

    monkeypatch.setenv("ASANET_RT_BACKEND", "ov")
    assert resolve(toy_model).name == "openvino"
    monkeypatch.setenv("ASANET_RT_BACKEND", "onnxruntime")
    assert resolve(toy_model).name == "onnxruntime"
