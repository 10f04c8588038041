"""``backend="auto"`` for ONNX on a CPU: a timed probe of the installed CPU backends, cached per model/CPU/versions."""
from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

from asanet_rt.backends import auto
from asanet_rt.backends.auto import Choice, choose_backend, pick_backend
from asanet_rt.errors import AsanetError

from runtime_helpers import toy_model  # noqa: F401 - fixture

HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(autouse=True)
def _probe_for_real(monkeypatch, tmp_path):
    monkeypatch.delenv("ASANET_RT_BACKEND", raising=False)
    monkeypatch.setenv("ASANET_RT_CACHE", str(tmp_path / "cache"))


class FakeRunner:
    """Sleeps ``delay`` seconds per call: a backend of known speed."""

    def __init__(self, delay: float, log: list, name: str, fail: bool = False) -> None:
        from toy_models import toy_metadata

        self.metadata = toy_metadata()
        self.delay, self.log, self.name, self.fail = delay, log, name, fail
        self.closed = False

    def infer(self, feed):
        if self.fail:
            raise RuntimeError("unsupported op")
        assert feed["optical"].shape == (2, 3, 64, 64) and feed["sar"].shape == (2, 1, 64, 64)
        self.log.append(self.name)
        time.sleep(self.delay)
        return {"logits": np.zeros((2, 4, 64, 64), np.float32)}

    def close(self):
        self.closed = True


def fake_opener(delays: dict, log: list, opened: list, fail: tuple = ()):
    def opener(path, backend, threads=None):
        runner = FakeRunner(delays[backend], log, backend, backend in fail)
        opened.append(runner)
        return runner
    return opener


def test_the_fastest_wins_and_the_choice_is_cached(toy_model):
    log, opened = [], []
    opener = fake_opener({"onnxruntime": 0.02, "openvino": 0.002}, log, opened)
    choice = pick_backend(toy_model, ["onnxruntime", "openvino"], tile=64, batch=2, probe_s=0.1, opener=opener)
    assert choice.name == "openvino" and not choice.cached
    assert choice.timings_ms["openvino"] < choice.timings_ms["onnxruntime"]
    assert "fastest of openvino" in choice.reason and "2 x 64 px" in choice.reason
    assert all(r.closed for r in opened)
    # timed in turns: the slow one's calls are interleaved with the fast one's, not run after them
    assert log[:4] == ["onnxruntime", "openvino", "onnxruntime", "openvino"]
    again = pick_backend(toy_model, ["onnxruntime", "openvino"], tile=64, batch=2, probe_s=0.1,
                         opener=fake_opener({"onnxruntime": 0.0, "openvino": 1.0}, [], []))
    assert again.cached and again.name == "openvino" and "cached" in again.reason
    cache = json.loads((auto.cache_dir() / auto.CACHE_FILE).read_text())
    assert len(cache["choices"]) == 1 and next(iter(cache["choices"].values()))["name"] == "openvino"


def test_a_changed_model_tile_or_backend_version_probes_again(toy_model, monkeypatch):
    delays = {"onnxruntime": 0.001, "openvino": 0.01}
    first = pick_backend(toy_model, ["onnxruntime", "openvino"], tile=64, batch=2, probe_s=0.05,
                         opener=fake_opener(delays, [], []))
    assert first.name == "onnxruntime"
    flipped = {"onnxruntime": 0.01, "openvino": 0.001}
    monkeypatch.setattr(auto, "backend_version", lambda name: "99.0" if name == "openvino" else "1.0")
    assert not pick_backend(toy_model, ["onnxruntime", "openvino"], tile=64, batch=2, probe_s=0.05,
                            opener=fake_opener(flipped, [], [])).cached
    toy_model.write_bytes(toy_model.read_bytes() + b"")  # same bytes, new mtime: the sha256 decides, still cached
    assert pick_backend(toy_model, ["onnxruntime", "openvino"], tile=64, batch=2, probe_s=0.05,
                        opener=fake_opener(flipped, [], [])).cached
    monkeypatch.setattr(auto, "cpu_model", lambda: "another CPU")
    assert not pick_backend(toy_model, ["onnxruntime", "openvino"], tile=64, batch=2, probe_s=0.05,
                            opener=fake_opener(flipped, [], [])).cached


def test_a_failing_candidate_loses_and_is_not_cached(toy_model):
    opened = []
    choice = pick_backend(toy_model, ["onnxruntime", "openvino"], tile=64, batch=2, probe_s=0.05,
                          opener=fake_opener({"onnxruntime": 0.01, "openvino": 0.0}, [], opened, fail=("openvino",)))
    assert choice.name == "onnxruntime" and "failed: openvino" in choice.reason
    assert not (auto.cache_dir() / auto.CACHE_FILE).exists()
    with pytest.raises(AsanetError, match="no CPU backend could run this model.*unsupported op"):
        pick_backend(toy_model, ["onnxruntime", "openvino"], tile=64, batch=2, probe_s=0.05,
                     opener=fake_opener({"onnxruntime": 0.0, "openvino": 0.0}, [], [],
                                        fail=("onnxruntime", "openvino")))


def test_environment_and_explicit_backends_skip_the_probe(toy_model, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("probed")

    monkeypatch.setattr(auto, "probe", no_probe)
    assert choose_backend(toy_model, "onnxruntime") == ("onnxruntime", None)
    monkeypatch.setenv("ASANET_RT_BACKEND", "ort")
    name, choice = choose_backend(toy_model, "auto")
    assert name == "onnxruntime" and choice.reason == "ASANET_RT_BACKEND=ort"
    monkeypatch.delenv("ASANET_RT_BACKEND")
    assert pick_backend(toy_model, ["onnxruntime"]) == Choice("onnxruntime", {}, False,
                                                              "the only installed CPU backend for ONNX files")


@pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed: nothing to choose between")
def test_classifier_auto_probes_the_installed_backends(toy_model, monkeypatch):
    from asanet_rt.classifier import Classifier

    monkeypatch.setattr(auto, "PROBE_S", 0.2)
    with Classifier.open(toy_model, threads=1, tile=64, batch=1) as clf:
        assert clf.backend in ("onnxruntime", "openvino")
        assert clf.backend_reason.startswith("fastest of ") and "1 x 64 px" in clf.backend_reason
        assert "onnxruntime" in clf.backend_reason and "openvino" in clf.backend_reason
    with Classifier.open(toy_model, threads=1, tile=64, batch=1) as again:
        assert again.backend == clf.backend and again.backend_reason.endswith("cached)")
    with Classifier.open(toy_model, backend="ort") as asked:
        assert asked.backend == "onnxruntime" and asked.backend_reason == "asked for (ort)"


@pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed: nothing to choose between")
def test_bench_pick_and_a_bare_onnx_path_run_the_auto_choice(toy_model, monkeypatch, capsys):
    from asanet_rt.bench import BenchSettings, parse_model
    from asanet_rt.cli import main

    monkeypatch.setattr(auto, "PROBE_S", 0.2)
    assert main(["bench", "--pick", str(toy_model), "--tile", "64", "--threads", "1"]) == 0
    line = capsys.readouterr().out.strip()
    picked = line.split(": ", 1)[1].split(" ", 1)[0]
    assert line.startswith(f"{toy_model}: ") and picked in ("onnxruntime", "openvino") and "fastest of" in line
    spec = parse_model(str(toy_model), settings=BenchSettings(tiles=(64,), batches=(1,), threads=1))
    assert spec.backend == picked and spec.label == f"{toy_model.name} (auto: {picked})"  # the cached choice
    assert parse_model(f"{toy_model}@ov").backend == "openvino"


@pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed: nothing to choose between")
def test_classify_says_which_backend_ran_and_why(toy_model, tmp_path, monkeypatch, capsys):
    from asanet_rt.cli import main
    from runtime_helpers import write_pair

    monkeypatch.setattr(auto, "PROBE_S", 0.2)
    optical, sar, _, _ = write_pair(tmp_path, 96, 96)
    args = ["classify", str(optical), str(sar), "-o", str(tmp_path / "lc.tif"), "--model", str(toy_model),
            "--tile", "64", "--batch", "1", "-q", "--threads", "1"]
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last in ("backend onnxruntime", "backend openvino")
    assert main(["--verbose", *args, "--overwrite"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.split(": ", 1)[1].startswith("fastest of ")
    assert "1 x 64 px" in last and last.endswith("cached)")  # the first run's probe, same tile, batch, threads
