"""Plugin registration modules import without TensorRT, and the mode follows the TensorRT version."""
from __future__ import annotations

import subprocess
import sys

import pytest

from asanet_rt.engines.plugins import AOT_OPS, choose_plugin_mode


@pytest.mark.parametrize("version,mode", [("10.3.0", "v3"), ("10.8.0.43", "v3"), ("10.9.0", "aot"),
                                          ("11.0.1", "aot"), ("11.4.0.106", "aot")])
def test_mode_by_tensorrt_version(version, mode):
    assert choose_plugin_mode(version) == mode


def test_v3_module_imports_without_tensorrt_or_cuda():
    code = ("import sys, asanet_rt.engines.plugins.trt_v3 as m; assert m.OPS == ('GRN', 'SFM', 'CFMGate', "
            "'CFMFuse'); assert not {'tensorrt', 'cuda', 'cupy'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_aot_ops_are_single_kernel_plans():
    from asanet_rt.engines.plugins import launch

    assert set(AOT_OPS) == {"CFMGate", "CFMFuse"}
    assert len(launch.cfm_gate_plan(1, 8, 4, 4, "float32").launches) == 1
    assert len(launch.cfm_fuse_plan(1, 8, 4, 4, "float16").launches) == 1
    assert not launch.cfm_fuse_plan(1, 8, 4, 4, "float16").workspace


def test_v3_registration_with_a_stand_in_registry(tmp_path, monkeypatch):
    """Registering builds creator objects for all four ops under the asanet namespace."""
    trt = pytest.importorskip("tensorrt", reason="needs TensorRT's IPluginV3 classes (tensorrt 10.x/11.x)")
    from asanet_rt.engines.plugins import trt_v3

    fatbin = tmp_path / "k.fatbin"
    fatbin.write_bytes(b"x")
    assert trt_v3.register_plugins(trt, fatbin) == str(fatbin)
    names = {c.name for c in trt.get_plugin_registry().all_creators if c.plugin_namespace == "asanet"}
    assert names >= set(trt_v3.OPS)
