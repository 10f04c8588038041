"""The builder's plugin path on CPU: what the parser is given (annotations, local functions removed), what TensorRT's
real ONNX parser (TensorRT-RTX's) does with it, the fallback to inlining, no-GPU and no-onnx errors, DLA rules."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

from asanet_rt.engines import builder as B  # noqa: E402
from asanet_rt.errors import AsanetError  # noqa: E402
from asanet_rt.onnx_info import read_onnx_info  # noqa: E402
from engine_toys import make_function_toy  # noqa: E402


class _Backend:
    """A TensorRT 10.x-like backend for the plugin decisions (no module behind it)."""

    def __init__(self, version="10.3.0.30"):
        self.version, self.supports_plugins, self.trt = version, True, types.SimpleNamespace()
        self.label = f"TensorRT {version}"

    @property
    def version_tuple(self):
        from asanet_rt.engines.backend import parse_version
        return parse_version(self.version)


def test_parser_copy_drops_the_local_functions_of_plugin_ops(tmp_path):
    onnx_path = make_function_toy(tmp_path)
    model = onnx.load_from_string(B._annotated_onnx(onnx_path, "v3"))
    assert not [f.name for f in model.functions]  # parsers up to 10.6 would import the function instead
    node = next(n for n in model.graph.node if n.domain == "asanet")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == b"asanet" and attrs["plugin_version"] == b"1" and "aot" not in attrs
    # AOT carries only CFMGate/CFMFuse: other ops keep their functions and stay unannotated
    model = onnx.load_from_string(B._annotated_onnx(onnx_path, "aot"))
    assert [f.name for f in model.functions] == ["Normalize"]
    assert not any(a.name.startswith("plugin") for n in model.graph.node for a in n.attribute)
    assert len(onnx.load(str(onnx_path)).functions) == 1  # the exported file is untouched
    assert B.plugin_ops_for("aot", ["GRN", "SFM", "CFMGate", "CFMFuse"]) == ["CFMFuse", "CFMGate"]
    assert B.plugin_ops_for("v3", ["GRN", "CFMFuse"]) == ["CFMFuse", "GRN"]


_PROBE = textwrap.dedent('''
    import sys, numpy as np, tensorrt_rtx as trt
    sys.path.insert(0, "tests")
    from pathlib import Path
    from asanet_rt.engines.builder import _annotated_onnx
    data = _annotated_onnx(Path(sys.argv[1]), "v3") if sys.argv[2] == "annotated" else Path(sys.argv[1]).read_bytes()

    class Creator(trt.IPluginCreatorV3One):
        def __init__(self):
            trt.IPluginCreatorV3One.__init__(self)
            self.name, self.plugin_namespace, self.plugin_version = "Normalize", "asanet", "1"
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField("eps", np.array([], np.float32), trt.PluginFieldType.FLOAT32)])

        def create_plugin(self, name, fc, phase):
            fields = {f.name: np.asarray(f.data).tolist() for f in fc}
            print("LOOKED UP", name, fields, flush=True)
            sys.exit(0)  # the parser found our creator: that is all this probe asks (RTX has no plugin layers)

    creator = Creator()
    trt.get_plugin_registry().register_creator(creator, "asanet")
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    print("PARSED", parser.parse(data), network.num_layers, flush=True)
''')


def test_real_onnx_parser_looks_our_plugin_up(tmp_path):
    """TensorRT-RTX's ONNX parser (onnx-tensorrt, same importer as TensorRT's) on the copy the builder hands it:
    it asks the registry for name Normalize, version 1, namespace asanet and passes the node's attributes as
    fields; on the untouched file it inlines the local function and never asks."""
    pytest.importorskip("tensorrt_rtx")
    onnx_path = make_function_toy(tmp_path)
    model = onnx.load(str(onnx_path))
    for node in model.graph.node:
        if node.domain == "asanet":
            node.attribute.append(onnx.helper.make_attribute("eps", 1e-5))
    onnx.save(model, str(onnx_path))
    run = lambda which: subprocess.run([sys.executable, "-c", _PROBE, str(onnx_path), which], capture_output=True,
                                       text=True, timeout=120)
    annotated = run("annotated")
    assert "LOOKED UP normalize" in annotated.stdout, annotated.stdout + annotated.stderr
    assert "'eps': [9.99999974" in annotated.stdout
    plain = run("plain")
    assert "LOOKED UP" not in plain.stdout and "PARSED True" in plain.stdout, plain.stdout + plain.stderr


def test_auto_falls_back_to_inlining_when_the_parser_refuses_the_plugins(tmp_path, caplog):
    trt = pytest.importorskip("tensorrt_rtx")
    from asanet_rt.engines.backend import load_backend

    be = load_backend("tensorrt_rtx")
    onnx_path = make_function_toy(tmp_path)
    info = read_onnx_info(onnx_path)
    logger = B._make_logger(trt)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    with caplog.at_level(logging.WARNING):
        network, plugins, used = B._parse_with_plugins(be, builder, flags, logger, onnx_path, info,
                                                       B._Plugins("v3"), "auto")
    assert plugins.mode == "none" and used == [] and network.num_layers > 0
    assert "inlining the local functions instead" in caplog.text
    with pytest.raises(AsanetError, match="could not parse"):
        B._parse_with_plugins(be, builder, flags, logger, onnx_path, info, B._Plugins("v3"), "v3")


def test_builder_without_a_gpu_says_so():
    class Logger:
        errors: list[str] = []

    def factory(logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")

    backend = types.SimpleNamespace(trt=types.SimpleNamespace(Builder=factory), label="TensorRT 10.3.0")
    with pytest.raises(AsanetError, match="no CUDA GPU found"):
        B._create_builder(backend, Logger())


def test_plugin_ops_without_the_onnx_package(tmp_path, monkeypatch, caplog):
    onnx_path = make_function_toy(tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    info = read_onnx_info(onnx_path)  # the protobuf is scanned without the package
    assert info.reader == "onnxruntime" and info.asanet_ops == {"Normalize": 1}
    assert info.local_functions == ["asanet.Normalize"] and info.ops_flavour == "plugins"
    monkeypatch.setattr(B.importlib.util, "find_spec", lambda name: None if name == "onnx" else object())
    with pytest.raises(AsanetError, match="needs the 'onnx' package"):
        B._prepare_plugins(_Backend(), info, "v3", onnx_path)
    with caplog.at_level(logging.WARNING):
        assert B._prepare_plugins(_Backend(), info, "auto", onnx_path).mode == "none"
    assert "'onnx' package" in caplog.text and "portable" not in caplog.text


def test_aot_ptx_is_prepared_before_tensorrt_builds(tmp_path, monkeypatch, caplog):
    """Without nvcc (or with a driver too old for the PTX) auto mode falls back before the build; the PTX is
    never compiled inside TensorRT's aot_impl callback."""
    from asanet_rt.engines.plugins import trt_aot

    onnx_path = make_function_toy(tmp_path)
    info = read_onnx_info(onnx_path)
    monkeypatch.setattr(trt_aot, "LIBRARY_PATH", tmp_path / "missing" / "asanet_kernels.ptx")
    monkeypatch.setattr(trt_aot, "_ptx", None)

    def no_nvcc(*args, **kwargs):
        raise AsanetError("nvcc not found: install the CUDA toolkit (13.x) or set CUDA_HOME")

    registered = []
    monkeypatch.setattr(trt_aot, "build_plugins", no_nvcc)
    monkeypatch.setattr(trt_aot, "register_aot_plugins", lambda: registered.append(1))
    with caplog.at_level(logging.WARNING):
        assert B._prepare_plugins(_Backend("10.9.0.34"), info, "auto", onnx_path).mode == "none"
    assert "nvcc not found" in caplog.text and not registered
    with pytest.raises(AsanetError, match="nvcc not found"):
        B._prepare_plugins(_Backend("11.4.0.106"), info, "aot", onnx_path)
    ptx = tmp_path / "asanet_kernels.ptx"
    ptx.write_text("// Cuda compilation tools, release 13.0, V13.0.88\n.entry cfm_fuse_aot_f32(")
    monkeypatch.setattr(trt_aot, "LIBRARY_PATH", ptx)
    monkeypatch.setattr("asanet_rt.backends.tensorrt_common.cuda_driver_version", lambda: (13, 0))
    plugins = B._prepare_plugins(_Backend("11.4.0.106"), info, "auto", onnx_path)
    assert plugins.mode == "aot" and registered == [1] and trt_aot.ptx() == ptx.read_bytes()
    monkeypatch.setattr("asanet_rt.backends.tensorrt_common.cuda_driver_version", lambda: (12, 6))
    assert B._prepare_plugins(_Backend("10.13.3.9"), info, "auto", onnx_path).mode == "none"
    assert "cannot load them" in caplog.text


# ---- DLA ----------------------------------------------------------------------------------------------------
def test_dla_needs_static_shapes(tmp_path):
    from toy_models import toy_metadata

    meta = toy_metadata()
    static = B.static_dla_profiles(None, meta, tmp_path / "m.onnx")
    (batch0, tile0) = B.default_ranges(meta)
    assert static == [{"batch": (batch0[1],) * 3, "tile": (tile0[1],) * 3}]
    assert B.static_dla_profiles([{"batch": (2, 2, 2), "tile": (256, None, 256)}], meta, Path("m")) == \
        [{"batch": (2, 2, 2), "tile": (256, 256, 256)}]
    with pytest.raises(AsanetError, match="--dla-core needs a static tile"):
        B.static_dla_profiles([{"tile": (256, 512, 1024)}], meta, Path("m.onnx"))
    with pytest.raises(AsanetError, match="static shapes"):
        B.static_dla_profiles([{"optical": ([1, 3, 64, 64], [1, 3, 64, 64], [2, 3, 64, 64]),
                                "sar": ([1, 1, 64, 64],) * 3}], meta, Path("m.onnx"))


@pytest.mark.parametrize("version,ok", [("10.3.0.30", True), ("10.16.1", True), ("11.0.0", False),
                                        ("11.3.1", False), ("11.4.1", True)])
def test_dla_refused_on_releases_without_it(version, ok):
    if ok:
        B.check_dla_version(_Backend(version))
    else:
        with pytest.raises(AsanetError, match="no DLA support"):
            B.check_dla_version(_Backend(version))


def test_dla_placement_is_read_from_the_engine_inspector():
    from asanet_rt.engines.inspect_layers import on_dla

    assert on_dla({"Name": "conv1", "LayerType": "DLA", "TacticName": ""})
    assert on_dla({"Name": "{ForeignNode[conv1...relu3]}", "LayerType": "Myelin", "TacticName": "dla_tactic"})
    assert not on_dla({"Name": "conv1", "LayerType": "CaskConvolution", "TacticName": "sm80_xmma"})


def test_auto_rebuilds_without_plugins_when_the_plugin_build_fails(tmp_path, monkeypatch, caplog):
    """A plugin that TensorRT refuses at build time (format, tactic, kernel) must not leave auto without an engine."""
    pytest.importorskip("tensorrt_rtx")
    onnx_path = make_function_toy(tmp_path)
    monkeypatch.setattr(B, "_prepare_plugins",
                        lambda be, info, requested, path: B._Plugins("v3") if requested == "auto" else B._Plugins())
    real_parse, real_create, calls = B._parse_with_plugins, B._create_builder, []

    def parse(be, builder, flags, logger, path, info, plugins, requested):  # pretend the ops became plugins
        network, _, used = real_parse(be, builder, flags, logger, path, info, B._Plugins(), requested)
        return network, plugins, used

    class FailsOnce:
        def __init__(self, builder):
            self.builder = builder

        def __getattr__(self, name):
            return getattr(self.builder, name)

        def build_serialized_network(self, network, config):
            calls.append(1)
            return None if len(calls) == 1 else self.builder.build_serialized_network(network, config)

    monkeypatch.setattr(B, "_parse_with_plugins", parse)
    monkeypatch.setattr(B, "_create_builder", lambda be, logger: FailsOnce(real_create(be, logger)))
    with caplog.at_level(logging.WARNING):
        info = B.build_engine(onnx_path, tmp_path / "e.engine", backend="tensorrt_rtx", progress=False,
                              profiles=[{"batch": (1, 1, 1), "tile": (32, 64, 64)}])
    assert info.plugins["mode"] == "none" and len(calls) == 2 and "building again" in caplog.text
    assert (tmp_path / "e.engine").is_file()


def test_dla_placement_from_the_builders_report():
    from asanet_rt.engines.inspect_layers import dla_layers_from_log

    log = ["Total Activation Memory: 1234", "---------- Layers Running on DLA ----------".replace("Running", "running"),
           "{conv1,bn1,relu1}, {conv2}", "---------- Layers running on GPU ----------", "{ForeignNode[x...y]}, pool"]
    assert dla_layers_from_log(log) == ["conv1", "bn1", "relu1", "conv2"]
    assert dla_layers_from_log(["--- Layers running on DLA: ", "--- Layers running on GPU: ", "conv1"]) == []
    assert dla_layers_from_log(["nothing about placement"]) is None
