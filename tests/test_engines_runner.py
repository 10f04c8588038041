"""The TensorRT / TensorRT-RTX engine runner. The GPU tests skip here (no GPU); one test checks the clear error an
engine gives on a machine that cannot run it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from asanet_rt.backends import open_runner
from asanet_rt.errors import AsanetError
from toy_models import toy_reference


def _cuda_skip_reason() -> str | None:
    """Why CUDA cannot be used here, or None."""
    from asanet_rt.backends._cuda import current_device_info

    if not any(importlib.util.find_spec(m) for m in ("cuda", "pycuda")):
        return "needs cuda-python or pycuda"
    if current_device_info(0) is None:
        return "no usable NVIDIA GPU (CUDA found no device or no driver)"
    return None


def _gpu_skip_reason() -> str | None:
    """Why real engines cannot be built and run here, or None."""
    from asanet_rt.backends._cuda import current_device_info
    from asanet_rt.engine_file import rtx_default_supports

    if importlib.util.find_spec("onnx") is None:
        return "needs the onnx package to make the toy model"
    if not any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx")):
        return "needs TensorRT or TensorRT-RTX"
    reason = _cuda_skip_reason()
    if reason:
        return reason
    device = current_device_info(0)
    if importlib.util.find_spec("tensorrt") is None and not rtx_default_supports(device.compute_capability):
        return (f"only TensorRT-RTX is installed, and it does not run on {device.name} "
                f"(sm_{device.compute_capability[0]}{device.compute_capability[1]})")
    return None


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    from asanet_rt.engines.builder import build_engine
    from engine_toys import TOY
    from toy_models import make_toy_onnx

    folder = tmp_path_factory.mktemp("runner")
    onnx = make_toy_onnx(folder / "toy.onnx", **TOY)
    out = folder / "toy.engine"
    build_engine(onnx, out, profiles=[{"batch": (1, 2, 2), "tile": (32, 64, 128)}], progress=False)
    return out


def _inputs(n: int = 2, h: int = 64, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.uniform(0, 255, (n, 3, h, w)).astype(np.float32), rng.uniform(0, 255, (n, 1, h, w)).astype(np.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
def test_engine_matches_reference(engine: Path, zero_copy: bool) -> None:
    optical, sar = _inputs()
    with open_runner(engine, zero_copy=zero_copy) as runner:
        assert runner.backend in ("tensorrt", "tensorrt_rtx") and runner.metadata.export["batch"] == [1, 2]
        assert set(runner.output_names) == {"logits", "probabilities", "classes", "confidence"}
        for n, h, w in ((2, 64, 96), (1, 32, 32), (2, 128, 128)):
            out = runner.infer({"optical": optical[:n, :, :h, :w], "sar": sar[:n, :, :h, :w]})
            ref = toy_reference(optical[:n, :, :h, :w], sar[:n, :, :h, :w])
            assert out["logits"].shape == ref.shape and out["classes"].dtype == np.uint8
            np.testing.assert_allclose(out["logits"], ref, rtol=1e-3, atol=1e-3)
        out2 = runner.infer({"optical": optical.astype(np.uint8), "sar": sar})
        assert out2["logits"].shape == (2, 4, 64, 96)


@pytest.mark.gpu
def test_engine_rejects_shapes_outside_the_profile(engine: Path) -> None:
    optical, sar = _inputs(n=2, h=64, w=64)
    with open_runner(engine) as runner:
        with pytest.raises(AsanetError, match="takes"):
            runner.infer({"optical": np.concatenate([optical, optical]), "sar": np.concatenate([sar, sar])})
        timed = runner.compute_fn({"optical": optical, "sar": sar})[0]
        assert timed() > 0


def test_engine_without_a_usable_gpu_fails_clearly(tmp_path: Path) -> None:
    if _cuda_skip_reason() is None:
        pytest.skip("CUDA works on this machine")
    import dataclasses

    from asanet_rt.engine_file import write_engine_file
    from test_engines_file import PLAN, fake_info

    path = tmp_path / "model.engine"
    write_engine_file(path, dataclasses.replace(fake_info(), backend="tensorrt_rtx", backend_version="1.7.1"), PLAN)
    with pytest.raises(AsanetError) as exc:
        open_runner(path)
    assert str(path) in str(exc.value) or "CUDA" in str(exc.value) or "cuda-python" in str(exc.value)


class _FakeTensorRT:
    """Just enough of the TensorRT runtime API for the runner, on real CUDA memory: its 'engine' copies the
    optical input into its one output, ``copy``, on the runner's stream."""

    __name__ = "fake_tensorrt"
    __version__ = "10.8.0.1"

    class TensorIOMode:
        INPUT, OUTPUT = 1, 2

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    @staticmethod
    def nptype(dtype: object) -> type:
        return np.float32

    class Runtime:
        def __init__(self, logger: object) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, plan: bytes) -> "_FakeEngine":
            assert plan == b"fake plan"
            return _FakeEngine()


class _FakeEngine:
    names = ("optical", "sar", "copy")
    num_io_tensors = 3

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> int:
        return 2 if name == "copy" else 1

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        c = 3 if name == "optical" else 1
        return [(1, c, 32, 32), (2, c, 64, 64), (2, c, 128, 128)]

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def create_execution_context(self) -> "_FakeContext":
        return _FakeContext()


class _FakeContext:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["optical" if name == "copy" else name]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        from cuda.bindings import runtime as rt

        nbytes = int(np.prod(self.shapes["optical"])) * 4
        err, = rt.cudaMemcpyAsync(self.addresses["copy"], self.addresses["optical"], nbytes,
                                  rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)
        return int(err) == 0


@pytest.mark.gpu
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
def test_runner_memory_flow_on_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zero_copy: bool) -> None:
    """Buffers, uploads, shapes, the stream, downloads and zero-copy, with a fake engine on real CUDA memory
    (runs on any GPU with cuda-python, TensorRT or not)."""
    reason = _cuda_skip_reason() or (None if importlib.util.find_spec("cuda") else "needs cuda-python")
    if reason:
        pytest.skip(reason)
    import dataclasses

    import asanet_rt.backends.tensorrt as trt_backend
    from asanet_rt.backends._cuda import current_device_info
    from asanet_rt.engine_file import write_engine_file
    from test_engines_file import fake_info

    cc = current_device_info(0).cc_text
    path = tmp_path / "fake.engine"
    write_engine_file(path, dataclasses.replace(fake_info(), compute_capability=cc, backend_version="10.8.0",
                                                plugins={"mode": "none"}), b"fake plan")
    monkeypatch.setattr(trt_backend, "import_runtime", lambda backend, module, p, **kw: _FakeTensorRT())
    optical, sar = _inputs(n=2, h=64, w=96)
    with open_runner(path, zero_copy=zero_copy) as runner:
        assert runner.output_names == ("copy",)
        for n, h, w in ((2, 64, 96), (1, 32, 32), (2, 64, 64)):
            out = runner.infer({"optical": optical[:n, :, :h, :w], "sar": sar[:n, :, :h, :w]})
            np.testing.assert_array_equal(out["copy"], optical[:n, :, :h, :w])
        assert runner.compute_fn({"optical": optical, "sar": sar})[0]() > 0
        with pytest.raises(AsanetError, match="takes"):
            runner.infer({"optical": optical[:, :, :, :31], "sar": sar[:, :, :, :31]})
    runner.close()
