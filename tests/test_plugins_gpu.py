"""Every plugin kernel on a real GPU (through CuPy) against the numpy references, FP32 and FP16."""
from __future__ import annotations

import numpy as np
import pytest

from asanet_rt.engines.plugins import reference


def _cupy():
    try:
        import cupy as cp
        if cp.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as exc:  # ImportError, CUDARuntimeError (no driver)
        pytest.skip(f"needs CuPy and a CUDA GPU ({type(exc).__name__}: {exc})")
    return cp


pytestmark = pytest.mark.gpu
# tiny stage 3 GRN has 3072 channels; odd planes and H*W below and above one 1024-thread block (45*37 = 1665
# takes a second pass), H*W not a multiple of 32; batch 1, 2 and 3; both cfm_fuse variants (warp per pixel for
# small deep maps, thread per pixel otherwise).
SHAPES = [(1, 40, 7, 9), (3, 96, 64, 64), (1, 768, 8, 8), (2, 3072, 5, 7), (1, 320, 33, 31), (3, 40, 45, 37)]
TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float16": dict(rtol=2e-2, atol=2e-2)}


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_grn_kernel(shape, dtype):
    cp = _cupy()
    from asanet_rt.engines.plugins import cupy_ops

    c = shape[1]
    x, gamma, beta = _data(shape, dtype, 0), _data((c,), dtype, 1), _data((c,), dtype, 2)
    got = cupy_ops.grn(cp.asarray(x), cp.asarray(gamma), cp.asarray(beta), 1e-6).get()
    np.testing.assert_allclose(got.astype(np.float64), reference.grn(x, gamma, beta, 1e-6), **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_sfm_kernel(shape, dtype):
    cp = _cupy()
    from asanet_rt.engines.plugins import cupy_ops

    c = shape[1]
    m = max(32, c // 16)
    x1, x2 = _data(shape, dtype, 3), _data(shape, dtype, 4)
    w1, b1 = (_data((m, c), dtype, 5) / np.sqrt(c)).astype(dtype), _data((m,), dtype, 6)
    w2, b2 = (_data((c, m), dtype, 7) / np.sqrt(m)).astype(dtype), _data((c,), dtype, 8)
    y1, y2 = cupy_ops.sfm(*(cp.asarray(a) for a in (x1, x2, w1, b1, w2, b2)))
    e1, e2 = reference.sfm(x1, x2, w1, b1, w2, b2)
    np.testing.assert_allclose(y1.get().astype(np.float64), e1, **TOL[dtype])
    np.testing.assert_allclose(y2.get().astype(np.float64), e2, **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_cfm_kernels(shape, dtype):
    cp = _cupy()
    from asanet_rt.engines.plugins import cupy_ops

    n, c, h, w = shape
    x1, x2, s = _data(shape, dtype, 9), _data(shape, dtype, 10), _data((n, 2 * c, 1, 1), dtype, 11)
    gate = cupy_ops.cfm_gate(cp.asarray(x1), cp.asarray(x2), cp.asarray(s)).get()
    np.testing.assert_allclose(gate.astype(np.float64), reference.cfm_gate(x1, x2, s), **TOL[dtype])
    wt, a = _data((n, 2 * c, h, w), dtype, 12), (3 * _data((n, 2 * c, h, w), dtype, 13)).astype(dtype)
    fused = cupy_ops.cfm_fuse(cp.asarray(wt), cp.asarray(a)).get()
    np.testing.assert_allclose(fused.astype(np.float64), reference.cfm_fuse(wt, a), **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_kernels_are_deterministic_and_softmax_is_stable(dtype):
    """No atomics: two runs are bit-identical. Logits far past exp's range still give a finite softmax."""
    cp = _cupy()
    from asanet_rt.engines.plugins import cupy_ops

    shape = (2, 384, 19, 23)
    x, gamma, beta = _data(shape, dtype, 20), _data((384,), dtype, 21), _data((384,), dtype, 22)
    args = [cp.asarray(v) for v in (x, gamma, beta)]
    assert (cupy_ops.grn(*args).get() == cupy_ops.grn(*args).get()).all()
    big = 200.0 if dtype == "float32" else 30000.0  # exp(200) overflows float32; 30000 is near fp16's max
    for n, c2, h, w in ((1, 256, 96, 96), (2, 192, 5, 7)):  # thread-per-pixel and warp-per-pixel variants
        wt = _data((n, c2, h, w), dtype, 23)
        a = (_data((n, c2, h, w), "float32", 24) + big).astype(dtype)
        got = cupy_ops.cfm_fuse(cp.asarray(wt), cp.asarray(a)).get()
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got.astype(np.float64), reference.cfm_fuse(wt, a), **TOL[dtype])


def test_tensorrt_engine_with_plugins_matches_onnxruntime(tmp_path):
    """End to end: build a plugin-flavour engine with our plugins and compare it with ORT on the same ONNX."""
    pytest.importorskip("tensorrt", reason="needs NVIDIA TensorRT 10.x/11.x (not installable on CPU machines)")
    _cupy()
    import torch

    from asanet_rt.backends import open_runner
    from asanet_rt.engines.builder import build_engine
    from asanet_rt.export.network import build_model
    from asanet_rt.export.onnx_export import ExportOptions, export_onnx
    from asanet_rt.metadata import ArchSpec, ModelMetadata

    from model_utils import randomise

    arch = ArchSpec((1, 1, 1, 1), (32, 64, 96, 128), 32, 5)
    model = randomise(build_model(arch), seed=5)
    model.metadata = ModelMetadata.build(arch)
    onnx_path = export_onnx(model, tmp_path / "p.onnx", ExportOptions(outputs=("logits",), tile=(64, 256),
                                                                      batch=(1, 2), ops="plugins")).path
    engine = tmp_path / "p.engine"
    info = build_engine(onnx_path, engine, backend="tensorrt", plugin_mode="auto")
    # Which ops became plugins, per TensorRT version: V3 (all four) before 10.9, AOT (the CFM pair) from 10.9.
    import tensorrt

    from asanet_rt.engines.plugins import choose_plugin_mode

    mode = choose_plugin_mode(tensorrt.__version__)
    expected = {"GRN", "SFM", "CFMGate", "CFMFuse"} if mode == "v3" else {"CFMGate", "CFMFuse"}
    assert info.plugins["mode"] == mode, info.plugins
    assert set(info.plugins["ops"]) == expected, info.plugins
    assert len(info.plugins["used"]) == sum(info.plugins["ops"].values()) > 0
    rng = np.random.default_rng(0)
    feed = {"optical": rng.uniform(0, 255, (2, 3, 128, 192)).astype(np.float32),
            "sar": rng.uniform(0, 255, (2, 1, 128, 192)).astype(np.float32)}
    with open_runner(str(onnx_path)) as ort_runner, open_runner(str(engine)) as trt_runner:
        expected, got = ort_runner.infer(feed)["logits"], trt_runner.infer(feed)["logits"]
    assert torch is not None
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nan_and_minus_inf_behave_like_torch(dtype):
    """NaN in a pooled plane propagates (torch's max pooling; fmaxf dropped it); a -inf logit gets probability 0
    without poisoning its row; a row of only -inf is NaN, as torch.softmax gives."""
    cp = _cupy()
    from asanet_rt.engines.plugins import cupy_ops

    n, c, h, w = 1, 40, 7, 9
    x1, x2 = _data((n, c, h, w), dtype, 30), _data((n, c, h, w), dtype, 31)
    x1[0, 3, 2, 4] = np.nan
    m = 32
    w1, b1 = (_data((m, c), dtype, 32) / np.sqrt(c)).astype(dtype), _data((m,), dtype, 33)
    w2, b2 = (_data((c, m), dtype, 34) / np.sqrt(m)).astype(dtype), _data((c,), dtype, 35)
    y1, y2 = (v.get() for v in cupy_ops.sfm(*(cp.asarray(a) for a in (x1, x2, w1, b1, w2, b2))))
    e1, e2 = reference.sfm(x1, x2, w1, b1, w2, b2)
    np.testing.assert_array_equal(np.isnan(y1), np.isnan(e1))
    np.testing.assert_array_equal(np.isnan(y2), np.isnan(e2))
    for c2, hw in ((16, (96, 96)), (192, (5, 7))):  # thread-per-pixel and warp-per-pixel variants
        wt = _data((1, c2, *hw), dtype, 36)
        a = _data((1, c2, *hw), dtype, 37)
        a[0, 0, 0, 0] = -np.inf                 # first channel -inf: used to make the whole row NaN
        a[0, : c2 // 2, 1, 1] = -np.inf         # a whole half of -inf: NaN, like torch
        a[0, c2 // 2 + 1, 2, 2] = np.nan        # NaN logit: that half's row is NaN
        got = cupy_ops.cfm_fuse(cp.asarray(wt), cp.asarray(a)).get().astype(np.float64)
        ref = reference.cfm_fuse(wt, a)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        ok = ~np.isnan(ref)
        np.testing.assert_allclose(got[ok], ref[ok], **TOL[dtype])


def test_v3_plugins_enqueue_on_device_memory_without_tensorrt(tmp_path):
    """The IPluginV3 classes' enqueue (as TensorRT would call it) on real GPU memory through cuda-python, with
    TensorRT-RTX's bindings for the classes: every op against the numpy reference."""
    trt = pytest.importorskip("tensorrt_rtx", reason="needs the IPluginV3 classes of tensorrt_rtx")
    from asanet_rt.backends.tensorrt_common import current_device_info

    if current_device_info(0) is None:
        pytest.skip("needs cuda-python and a CUDA GPU")
    import types

    from cuda.bindings import runtime as rt

    from asanet_rt.engines.plugins import trt_v3
    from asanet_rt.engines.plugins.build import build_plugins

    trt_v3._Kernels.path = build_plugins(tmp_path)
    trt_v3._Kernels._modules.clear()
    trt_v3._Kernels._functions.clear()
    rt.cudaSetDevice(0)
    classes = trt_v3.make_classes(trt)
    n, c, h, w, m = 2, 40, 7, 9, 32
    rng = np.random.default_rng(7)
    cases = {
        "GRN": ([(n, c, h, w), (c,), (c,)], [(n, c, h, w)], lambda a: [reference.grn(*a, 1e-6)]),
        "SFM": ([(n, c, h, w), (n, c, h, w), (m, c), (m,), (c, m), (c,)], [(n, c, h, w)] * 2,
                lambda a: list(reference.sfm(*a))),
        "CFMGate": ([(n, c, h, w), (n, c, h, w), (n, 2 * c, 1, 1)], [(n, 2 * c, h, w)],
                    lambda a: [reference.cfm_gate(*a)]),
        "CFMFuse": ([(n, 2 * c, h, w), (n, 2 * c, h, w)], [(n, c, h, w)], lambda a: [reference.cfm_fuse(*a)]),
    }
    for op, (in_shapes, out_shapes, ref) in cases.items():
        host = [(rng.normal(size=s) / (np.sqrt(s[-1]) if len(s) == 2 else 1)).astype(np.float32) for s in in_shapes]
        plugin = classes[op][0]()
        ptrs_in, ptrs_out = [], []
        for a in host:
            err, p = rt.cudaMalloc(a.nbytes)
            rt.cudaMemcpy(p, a.ctypes.data, a.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
            ptrs_in.append(int(p))
        for s in out_shapes:
            err, p = rt.cudaMalloc(int(np.prod(s)) * 4)
            ptrs_out.append(int(p))
        desc = [types.SimpleNamespace(dims=s, type=trt.float32) for s in in_shapes]
        workspace = plugin.plan([list(s) for s in in_shapes], "float32").workspace_bytes
        err, ws = rt.cudaMalloc(max(1, workspace))
        err, stream = rt.cudaStreamCreate()
        plugin.enqueue(desc, [], ptrs_in, ptrs_out, int(ws), int(stream))
        rt.cudaStreamSynchronize(stream)
        for p, s, expected in zip(ptrs_out, out_shapes, ref(host)):
            got = np.empty(s, np.float32)
            rt.cudaMemcpy(got.ctypes.data, p, got.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
            np.testing.assert_allclose(got.astype(np.float64), expected, **TOL["float32"], err_msg=op)
        for p in ptrs_in + ptrs_out + [int(ws)]:
            rt.cudaFree(p)
        rt.cudaStreamDestroy(stream)
