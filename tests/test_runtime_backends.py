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
    with pytest.raises(AsanetError, match=r"model\.engine: engine support is not part of this install"):
        open_runner(engine)
    with pytest.raises(AsanetError, match="cannot run on onnxruntime"):
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
