"""Plugin registration modules import without TensorRT, the mode follows the TensorRT version, and the
registration code is exercised on CPU against stand-ins: TensorRT-RTX's IPluginV3 classes (same Python API as
TensorRT's), a recording cuda-python driver, and a validating stand-in for ``tensorrt.plugin``."""
from __future__ import annotations

import inspect
import subprocess
import sys
import types
import typing

import numpy as np
import pytest

from asanet_rt.engines.plugins import AOT_OPS, choose_plugin_mode, launch


@pytest.mark.parametrize("version,mode", [("10.3.0", "v3"), ("10.3.0.30", "v3"), ("10.8.0.43", "v3"),
                                          ("10.9.0", "aot"), ("10.13.2.6", "aot"), ("11.0", "aot"),
                                          ("11.0.1", "aot"), ("11.4.0.106", "aot")])
def test_mode_by_tensorrt_version(version, mode):
    assert choose_plugin_mode(version) == mode


@pytest.mark.parametrize("module", ["trt_v3", "trt_aot", "cupy_ops", "build", "reference", "launch"])
def test_modules_import_without_tensorrt_cupy_or_cuda(module):
    code = (f"import sys, asanet_rt.engines.plugins.{module}; "
            "bad = {'tensorrt', 'tensorrt_rtx', 'cuda', 'cupy'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_aot_ops_are_single_kernel_plans():
    assert set(AOT_OPS) == {"CFMGate", "CFMFuse"}
    assert len(launch.cfm_gate_plan(1, 8, 4, 4, "float32").launches) == 1
    assert len(launch.cfm_fuse_plan(1, 8, 4, 4, "float16").launches) == 1
    assert not launch.cfm_fuse_plan(1, 8, 4, 4, "float16").workspace


# ---- IPluginV3 classes against TensorRT-RTX's bindings (the same IPluginV3One* Python classes) ------------

@pytest.fixture(scope="module")
def trt_like():
    return pytest.importorskip("tensorrt_rtx", reason="needs tensorrt_rtx (or tensorrt) for the IPluginV3 classes")


def _dyn(trt, dtype, dims):
    d = trt.DynamicPluginTensorDesc()
    d.desc.type, d.desc.format = dtype, trt.TensorFormat.LINEAR
    d.desc.dims, d.min, d.opt, d.max = trt.Dims(dims), trt.Dims(dims), trt.Dims(dims), trt.Dims(dims)
    return d


def test_v3_creators_and_plugins_on_real_bindings(trt_like, tmp_path):
    trt = trt_like
    from asanet_rt.engines.plugins import trt_v3

    classes = trt_v3.make_classes(trt)
    assert tuple(classes) == trt_v3.OPS
    eps = trt.PluginFieldCollection([trt.PluginField("eps", np.array([1e-5], np.float32),
                                                     trt.PluginFieldType.FLOAT32)])
    for op, (_, creator_cls) in classes.items():
        creator = creator_cls()
        assert (creator.name, creator.plugin_namespace, creator.plugin_version) == (op, "asanet", "1")
        plugin = creator.create_plugin(op, eps, trt.TensorRTPhase.BUILD)
        assert (plugin.plugin_name, plugin.plugin_namespace, plugin.plugin_version) == (op, "asanet", "1")
        n_out = 2 if op == "SFM" else 1
        assert plugin.num_outputs == n_out
        assert plugin.get_output_data_types([trt.float16] * 3) == [trt.float16] * n_out
        assert type(plugin.clone()) is type(plugin) and plugin.clone().eps == plugin.eps
    grn = classes["GRN"][1]().create_plugin("GRN", eps, trt.TensorRTPhase.BUILD)
    assert grn.eps == pytest.approx(1e-5)
    assert [f.name for f in grn.get_fields_to_serialize()] == ["eps"]
    default = classes["GRN"][1]().create_plugin("GRN", trt.PluginFieldCollection([]), trt.TensorRTPhase.RUNTIME)
    assert default.eps == 1e-6  # the contract's default when the ONNX node carries no eps


def test_v3_formats_and_workspace(trt_like):
    trt = trt_like
    from asanet_rt.engines.plugins import trt_v3

    sfm = trt_v3.make_classes(trt)["SFM"][0]()
    shapes = [(2, 96, 7, 9), (2, 96, 7, 9), (32, 96), (32,), (96, 32), (96,)]
    io = [_dyn(trt, trt.float16, s) for s in shapes] + [_dyn(trt, trt.float16, shapes[0])] * 2
    assert all(sfm.supports_format_combination(i, io, 6) for i in range(8))
    io[3] = _dyn(trt, trt.float32, (32,))  # mixed dtypes break the one-dtype-per-op contract
    assert not sfm.supports_format_combination(3, io, 6)
    assert not sfm.supports_format_combination(0, [_dyn(trt, trt.int8, shapes[0])], 1)
    ws = sfm.get_workspace_size([_dyn(trt, trt.float16, s) for s in shapes], [])
    assert ws == launch.sfm_plan(2, 96, 7, 9, 32, "float32").workspace_bytes >= 4 * 4 * 2 * 96
    cfm = trt_v3.make_classes(trt)["CFMFuse"][0]()
    assert cfm.get_workspace_size([_dyn(trt, trt.float32, (1, 16, 4, 4))] * 2, []) == 0


def test_v3_registers_all_four_creators(trt_like, tmp_path):
    trt = trt_like
    from asanet_rt.engines.plugins import trt_v3

    fatbin = tmp_path / "k.fatbin"
    fatbin.write_bytes(b"x")
    assert trt_v3.register_plugins(trt, fatbin) == str(fatbin)
    trt_v3.register_plugins(trt, fatbin)  # idempotent
    names = [c.name for c in trt.get_plugin_registry().all_creators if c.plugin_namespace == "asanet"]
    assert sorted(names) == sorted(trt_v3.OPS)


# ---- cuda-python launches, recorded -------------------------------------------------------------------------

class _FakeDriver:
    """Records cuLaunchKernel calls; mimics cuda.bindings.driver's (err, value) return convention."""

    class CUresult:
        CUDA_SUCCESS = 0

    def __init__(self):
        self.launches, self.loads = [], 0

    def CUstream(self, handle):  # noqa: N802 - cuda-python's spelling
        return ("stream", handle)

    def cuCtxGetCurrent(self):  # noqa: N802
        return 0, 1234

    def cuModuleLoadData(self, image):  # noqa: N802
        self.loads += 1
        return 0, "module"

    def cuModuleGetFunction(self, module, name):  # noqa: N802
        return 0, name.decode()

    def cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, shared, stream, params, extra):  # noqa: N802
        self.launches.append((fn, (gx, gy, gz), (bx, by, bz), shared, stream, params))
        return (0,)


def test_v3_run_plan_packs_arguments_for_cuda_python(monkeypatch, tmp_path):
    import ctypes

    from asanet_rt.engines.plugins import trt_v3

    fake = _FakeDriver()
    monkeypatch.setattr(trt_v3, "_driver", lambda: fake)
    monkeypatch.setattr(trt_v3._Kernels, "path", tmp_path / "k.fatbin")
    monkeypatch.setattr(trt_v3._Kernels, "_modules", {})
    monkeypatch.setattr(trt_v3._Kernels, "_functions", {})
    (tmp_path / "k.fatbin").write_bytes(b"fatbin")
    plan = launch.grn_plan(2, 40, 7, 9, "float16", 1e-6)
    pointers = {"x": 0x1000, "gamma": 0x2000, "beta": 0x3000, "y": 0x4000}
    trt_v3.run_plan(plan, pointers, workspace=0x10000, stream=77)
    trt_v3.run_plan(plan, pointers, workspace=0x10000, stream=77)
    assert fake.loads == 1  # one module per context
    names = [call[0] for call in fake.launches[:3]]
    assert names == ["grn_norm_f16", "grn_scale_f32", "grn_apply_f16"]
    fn, grid, block, shared, stream, (values, ctypes_) = fake.launches[0]
    assert stream == ("stream", 77) and grid == (80, 1, 1) and block == (64, 1, 1)
    offsets = plan.workspace_offsets()
    assert values == (0x1000, 0x10000 + offsets["g"], 63) and ctypes_ == (ctypes.c_void_p, ctypes.c_void_p,
                                                                            ctypes.c_longlong)
    _, _, _, _, _, (values, ctypes_) = fake.launches[1]
    assert values[2:] == (40, pytest.approx(1e-6)) and ctypes_[2:] == (ctypes.c_int, ctypes.c_float)


# ---- tensorrt.plugin (AOT), against a stand-in that validates like TensorRT does ---------------------------

class _Shape(list):
    def numel(self):
        return int(np.prod(self))


class _Desc:
    def __init__(self, shape, dtype):
        self.shape_expr, self.dtype = _Shape(shape), dtype

    def like(self):  # shares shape_expr, as tensorrt.plugin's TensorDesc.like() does
        d = _Desc([], self.dtype)
        d.shape_expr = self.shape_expr
        return d


def _fake_tensorrt(monkeypatch):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0.34"
    trt.float32, trt.float16 = "FP32", "FP16"
    trtp = types.ModuleType("tensorrt.plugin")
    trtp.registry = {}

    class KernelLaunchParams:
        grid_x = block_x = shared_mem = None

    class SymIntExprs(tuple):
        @classmethod
        def from_tuple(cls, items):
            return cls(items)

    class AutoTuneCombination:
        def __init__(self, io_types, layouts="LINEAR"):
            self.io_types, self.layouts = [s.strip() for s in io_types.split(",")], layouts

    trtp.TensorDesc, trtp.ShapeExpr = _Desc, int
    trtp.KernelLaunchParams, trtp.SymIntExprs, trtp.SymExprs = KernelLaunchParams, SymIntExprs, SymIntExprs
    trtp.AutoTuneCombination = AutoTuneCombination
    trtp.SymInt32 = lambda e: ("i32", e)
    trtp.cdiv = lambda a, b: -(-a // b)
    trtp.from_shape_expr = lambda shape, dtype: _Desc(shape, dtype)

    def decorator(kind):
        def outer(name):
            def inner(fn):
                sig = inspect.signature(fn)  # TensorRT validates annotations with issubclass: no strings
                for p in sig.parameters.values():
                    assert not isinstance(p.annotation, str), (name, kind, p)
                assert sig.return_annotation is not inspect.Parameter.empty, (name, kind)
                trtp.registry[(name, kind)] = fn
                return fn
            return inner
        return outer

    trtp.register, trtp.autotune, trtp.aot_impl = decorator("register"), decorator("autotune"), decorator("aot")
    trt.plugin = trtp
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    return trt, trtp


def test_aot_registration_follows_tensorrt_plugin_rules(monkeypatch, tmp_path):
    trt, trtp = _fake_tensorrt(monkeypatch)
    from asanet_rt.engines.plugins import trt_aot

    ptx = tmp_path / "k.ptx"
    ptx.write_bytes(b".entry cfm_gate_aot_f16(\n.entry cfm_fuse_aot_f32(")
    monkeypatch.setattr(trt_aot, "LIBRARY_PATH", ptx)
    monkeypatch.setattr(trt_aot, "_registered", False)
    monkeypatch.setattr(trt_aot, "_ptx", None)
    trt_aot.register_aot_plugins()
    with pytest.raises(RuntimeError, match="prepare_ptx"):  # aot_impl never compiles inside TensorRT's build
        trt_aot.ptx()
    assert trt_aot.prepare_ptx() == ptx.read_bytes()
    assert {name for name, _ in trtp.registry} == {"asanet::CFMGate", "asanet::CFMFuse"}

    # Schemas TensorRT enforces: register(tensors...), autotune(tensors..., outputs),
    # aot_impl(tensors..., outputs, tactic) with a 4-tuple return annotation; autotune returns a List.
    for (name, kind), fn in trtp.registry.items():
        params = list(inspect.signature(fn).parameters)
        tensors = ["x1", "x2", "s"] if name.endswith("Gate") else ["w", "a"]
        assert params == tensors + {"register": [], "autotune": ["outputs"], "aot": ["outputs", "tactic"]}[kind]
        ret = inspect.signature(fn).return_annotation
        if kind == "autotune":
            assert typing.get_origin(ret) is list
        if kind == "aot":
            assert typing.get_origin(ret) is tuple and len(typing.get_args(ret)) == 4

    x = _Desc((2, 96, 7, 9), trt.float16)
    out = trtp.registry[("asanet::CFMGate", "register")](x, _Desc((2, 96, 7, 9), trt.float16),
                                                        _Desc((2, 192, 1, 1), trt.float16))
    assert out.shape_expr == [2, 192, 7, 9] and x.shape_expr == [2, 96, 7, 9]  # the input is untouched
    name, code, params, extra = trtp.registry[("asanet::CFMGate", "aot")](x, x, x, (out,), 0)
    assert name == b"cfm_gate_aot_f16" and code == ptx.read_bytes()
    assert extra == (("i32", 2), ("i32", 96), ("i32", 7), ("i32", 9))  # N, C, H, W: no product can wrap
    assert (params.grid_x, params.block_x, params.shared_mem) == (1 * 2 * 96 * 2, 256, 0)
    tunes = trtp.registry[("asanet::CFMGate", "autotune")](x, x, x, (out,))
    assert [t.io_types for t in tunes] == [["FP32|FP16"] * 4]

    w = _Desc((1, 1536, 8, 8), trt.float32)
    y = trtp.registry[("asanet::CFMFuse", "register")](w, w)
    assert y.shape_expr == [1, 768, 8, 8] and w.shape_expr == [1, 1536, 8, 8]
    name, _, params, extra = trtp.registry[("asanet::CFMFuse", "aot")](w, w, (y,), 0)
    assert name == b"cfm_fuse_aot_f32" and extra == (("i32", 1), ("i32", 768), ("i32", 8), ("i32", 8))
    assert params.grid_x == 1 and params.block_x == 256


def test_aot_import_never_registers(monkeypatch):
    """Registration is explicit (the builder calls it): importing must not depend on what was imported first."""
    _fake_tensorrt(monkeypatch)
    sys.modules.pop("asanet_rt.engines.plugins.trt_aot", None)
    import asanet_rt.engines.plugins.trt_aot as m

    assert not m._registered and not sys.modules["tensorrt.plugin"].registry
