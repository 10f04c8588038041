"""Engine files never switch on code execution by themselves: the host-code decision, the runner with a stand-in
runtime that records the flag, the plugin-kernel hash check, the lean-runtime rule. CPU only."""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import types
from pathlib import Path

import pytest

import asanet_rt.backends.tensorrt as trt_backend
from asanet_rt.backends import tensorrt_common as common
from asanet_rt.backends.tensorrt_common import EngineTrustError, allow_host_code, engine_digests
from asanet_rt.engine_file import read_engine, write_engine_file
from asanet_rt.errors import AsanetError
from test_engines_file import PLAN, fake_info

VC = {"hardware": "none", "version_compatible": True}


@pytest.fixture(autouse=True)
def _no_user_allow_list(monkeypatch, tmp_path):
    monkeypatch.setenv(common.TRUSTED_ENGINES_ENV, str(tmp_path / "no-such-list.txt"))


def _engine(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "model.engine"
    write_engine_file(path, fake_info(**{"plugins": {"mode": "none"}, **changes}), PLAN, overwrite=True)
    return path


# ---- the decision function ------------------------------------------------------------------------------------
def test_header_saying_version_compatible_never_enables_host_code(tmp_path):
    path = _engine(tmp_path, compatibility=VC)
    info, plan = read_engine(path)
    with pytest.raises(EngineTrustError) as exc:
        allow_host_code(info, path, digests=engine_digests(path, plan))
    message = str(exc.value)
    assert "\n" not in message and "--allow-engine-host-code" in message and "risky" in message
    assert allow_host_code(info, path, allowed=True) is True
    plain = _engine(tmp_path)
    assert allow_host_code(read_engine(plain)[0], plain) is False


@pytest.mark.parametrize("which", ["plan", "file"])
def test_allow_list_of_engine_hashes(tmp_path, monkeypatch, which):
    path = _engine(tmp_path, compatibility=VC)
    info, plan = read_engine(path)
    digest = hashlib.sha256(plan if which == "plan" else path.read_bytes()).hexdigest()
    allow = tmp_path / "trusted.txt"
    allow.write_text(f"# engines from our build server\n{digest}  {path.name}\n")  # sha256sum's format
    monkeypatch.setenv(common.TRUSTED_ENGINES_ENV, str(allow))
    assert allow_host_code(info, path, digests=engine_digests(path, plan)) is True
    allow.write_text("0" * 64 + "\n")
    with pytest.raises(EngineTrustError):
        allow_host_code(info, path, digests=engine_digests(path, plan))


def test_default_allow_list_location(monkeypatch, tmp_path):
    monkeypatch.delenv(common.TRUSTED_ENGINES_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert common.trusted_engines_file() == tmp_path / "asanet_rt" / "trusted_engines.txt"


# ---- the runner, with a stand-in TensorRT that records what it was told ---------------------------------------
class _Recorder:
    """A stand-in runtime module: records ``engine_host_code_allowed`` and refuses to deserialise."""

    def __init__(self, version="10.8.0.43"):
        self.__name__, self.__version__ = "recording_tensorrt", version
        self.flags: list[bool] = []
        recorder = self

        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        class ILogger:
            def __init__(self):
                pass
        ILogger.Severity = Severity

        class Runtime:
            engine_host_code_allowed = False

            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                recorder.flags.append(self.engine_host_code_allowed)
                return None

        self.ILogger, self.Runtime = ILogger, Runtime


class _Cuda:
    def device_info(self):
        return common.DeviceInfo("stand-in GPU", (8, 7), True, True)

    def close(self):
        pass


def _run(monkeypatch, path, **options):
    fake = _Recorder()
    monkeypatch.setattr(trt_backend, "import_runtime", lambda *a, **k: fake)
    monkeypatch.setattr(trt_backend, "open_cuda", lambda device, prefer=None: _Cuda())
    with pytest.raises(AsanetError) as exc:
        trt_backend.TensorRTRunner(path, **options)
    return fake.flags, str(exc.value)


def test_runner_refuses_version_compatible_engine_without_consent(tmp_path, monkeypatch):
    flags, message = _run(monkeypatch, _engine(tmp_path, compatibility=VC))
    assert flags == [] and "--allow-engine-host-code" in message  # refused before TensorRT saw the plan


def test_runner_passes_the_users_decision_only(tmp_path, monkeypatch):
    flags, _ = _run(monkeypatch, _engine(tmp_path, compatibility=VC), allow_host_code=True)
    assert flags == [True]
    flags, message = _run(monkeypatch, _engine(tmp_path))
    assert flags == [False] and "could not deserialise" in message


def test_open_runner_forwards_allow_host_code(tmp_path, monkeypatch):
    from asanet_rt.backends import open_runner

    fake = _Recorder()
    monkeypatch.setattr(trt_backend, "import_runtime", lambda *a, **k: fake)
    monkeypatch.setattr(trt_backend, "open_cuda", lambda device, prefer=None: _Cuda())
    with pytest.raises(AsanetError):
        open_runner(_engine(tmp_path, compatibility=VC), allow_host_code=True)
    assert fake.flags == [True]


# ---- plugins: only this package's kernels, and only the ones the engine was built with ------------------------
def _v3_engine(tmp_path, kernels: Path, sha: str | None = None) -> Path:
    sha = sha if sha is not None else hashlib.sha256(kernels.read_bytes()).hexdigest()
    return _engine(tmp_path, plugins={"mode": "v3", "used": ["grn"], "library": "/tmp/evil.so",
                                      "library_sha256": sha})


def test_plugin_kernel_hash_is_checked(tmp_path, monkeypatch):
    from asanet_rt.engines.plugins import trt_v3

    kernels = tmp_path / "asanet_kernels.fatbin"
    kernels.write_bytes(b"kernels built with the engine")
    registered = []
    monkeypatch.setattr(trt_v3, "kernel_library", lambda: kernels)
    monkeypatch.setattr(trt_v3, "register_plugins", lambda trt, lib=None: registered.append(lib))
    path = _v3_engine(tmp_path, kernels)
    common.register_engine_plugins(object(), read_engine(path)[0].plugins, path)
    assert registered == [kernels]  # ours, never the header's "/tmp/evil.so"
    kernels.write_bytes(b"other kernels")
    with pytest.raises(AsanetError, match="built with plugin kernels of sha256"):
        common.register_engine_plugins(object(), read_engine(path)[0].plugins, path)
    assert len(registered) == 1
    with pytest.raises(AsanetError, match="plugin mode 'custom'"):
        common.register_engine_plugins(object(), {"mode": "custom", "library": "/tmp/evil.so"}, path)


# ---- the lean runtime runs version-compatible plans only -------------------------------------------------------
def test_lean_runtime_only_for_version_compatible_engines(monkeypatch, tmp_path):
    lean = types.ModuleType("tensorrt_lean")
    lean.Runtime = object
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # full TensorRT absent
    monkeypatch.setitem(sys.modules, "tensorrt_lean", lean)
    path = tmp_path / "m.engine"
    assert common.import_runtime("tensorrt", None, path, version_compatible=True) is lean
    with pytest.raises(AsanetError, match="needs full TensorRT"):
        common.import_runtime("tensorrt", None, path, version_compatible=False)
    with pytest.raises(AsanetError, match="loads only version-compatible"):
        common.import_runtime("tensorrt", "tensorrt_lean", path, version_compatible=False)


def test_inspect_layers_follows_the_trust_rule_and_shares_the_logger(tmp_path, monkeypatch, capsys):
    from asanet_rt.cli import main

    path = _engine(tmp_path, compatibility=VC)
    assert main(["inspect", str(path), "--layers"]) == 2
    err = capsys.readouterr().err
    assert "--allow-engine-host-code" in err and err.count("\n") == 1

    fake = _Recorder()
    loggers = []
    monkeypatch.setattr(common, "import_runtime", lambda *a, **k: fake)
    monkeypatch.setattr(common, "current_device_info", lambda device=0: common.DeviceInfo("GPU", (8, 7), True, True))
    real_shared = common.shared_logger
    monkeypatch.setattr(common, "shared_logger", lambda trt: loggers.append(real_shared(trt)) or loggers[-1])
    assert main(["inspect", str(path), "--layers", "--allow-engine-host-code"]) == 2  # the stand-in refuses the plan
    assert fake.flags == [True] and len(loggers) == 1 and loggers[0] is real_shared(fake)
    assert "could not deserialise" in capsys.readouterr().err


def test_v3_plugin_keeps_its_serialized_fields_alive():
    """TensorRT before 10.6 reads the returned collection after get_fields_to_serialize returns."""
    import gc

    trt = pytest.importorskip("tensorrt_rtx")
    from asanet_rt.engines.plugins import trt_v3

    grn = trt_v3.make_classes(trt)["GRN"][0](1e-5)
    fields = grn.get_fields_to_serialize()
    holders = [r for r in gc.get_referrers(fields) if isinstance(r, tuple)]
    assert any(h in vars(grn).values() for h in holders)


# ---- the CLI flag reaches the runner of every command that opens engines ---------------------------------------
class _Stop(AsanetError):
    pass


def test_allow_engine_host_code_flag_reaches_the_runners(tmp_path, monkeypatch):
    from asanet_rt import batch, bench, cli, evaluate
    from asanet_rt.classifier import Classifier

    engine = _engine(tmp_path, compatibility=VC)
    seen = {}

    def fake_open(path, backend="auto", device=0, **options):
        seen["classify"] = options
        raise _Stop("stop")

    monkeypatch.setattr(Classifier, "open", staticmethod(fake_open))
    assert cli.main(["classify", "a.tif", "b.tif", "-o", str(tmp_path / "o.tif"), "--model", str(engine),
                     "--allow-engine-host-code"]) == 2
    assert {k: v for k, v in seen["classify"].items() if v is not None} == {"allow_host_code": True}

    def fake_run_batch(manifest, outdir, config, summary_path=None):
        seen["batch"] = batch._runner_options(config, None)
        raise _Stop("stop")

    monkeypatch.setattr(batch, "run_batch", fake_run_batch)
    assert cli.main(["batch", "m.csv", "-o", str(tmp_path), "--model", str(engine),
                     "--allow-engine-host-code"]) == 2
    assert seen["batch"] == {"allow_host_code": True}

    def fake_evaluate(model, data, **kwargs):
        seen["eval"] = kwargs["allow_host_code"]
        raise _Stop("stop")

    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    assert cli.main(["eval", str(engine), "--data", str(tmp_path), "--allow-engine-host-code"]) == 2
    assert seen["eval"] is True

    def fake_benchmark(models, settings, **kwargs):
        seen["bench"] = bench.BenchSettings.from_dict(settings.to_dict()).allow_engine_host_code  # as the subprocess
        raise _Stop("stop")

    monkeypatch.setattr(bench, "run_benchmark", fake_benchmark)
    assert cli.main(["bench", str(engine), "--allow-engine-host-code"]) == 2
    assert seen["bench"] is True
