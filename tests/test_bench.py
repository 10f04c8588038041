"""``asanet-rt bench``: a short CPU run over a checkpoint, its ONNX export and the toy model; JSON schema, ratios,
markdown, errors. Timings are not checked (2 shared cores): only their structure and arithmetic."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asanet_rt import bench
from asanet_rt.bench import env as bench_env
from asanet_rt.cli import main
from asanet_rt.errors import AsanetError
from asanet_rt.export.network import build_model
from asanet_rt.export.onnx_export import ExportOptions, export_onnx
from asanet_rt.metadata import ArchSpec, ModelMetadata
from model_utils import randomise
from toy_models import make_toy_onnx

ARCH = ArchSpec((1, 1, 1, 1), (16, 32, 48, 64), 24, 5)
FAST = dict(warmup=0, iterations=3, time_budget_s=0.01, min_iterations=2, threads=1)
MEASURE_KEYS = {"timer", "iterations", "warmup", "total_s", "latency_ms", "throughput", "cpu_ms_per_iter",
                "samples_ms"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small random-weight checkpoint (bare state dict), its ONNX export, and the toy model (tiles 64-512)."""
    folder = tmp_path_factory.mktemp("bench_models")
    net = randomise(build_model(ARCH), seed=3)
    ckpt = folder / "small.pth"
    torch.save(net.state_dict(), ckpt)
    net.metadata = ModelMetadata.build(ARCH)
    onnx_path = folder / "small.onnx"
    export_onnx(net, onnx_path, ExportOptions(batch=(1, 4), tile=(32, 256)))
    toy = make_toy_onnx(folder / "toy.onnx", tile=(64, 512), outputs=("logits", "classes"))
    return {"ckpt": ckpt, "onnx": onnx_path, "toy": toy}


@pytest.fixture(scope="module")
def report(models) -> dict:
    settings = bench.BenchSettings(batches=(1, 2), tiles=(32, 64), **FAST)
    return bench.run_benchmark([models["ckpt"], models["onnx"], models["toy"]], settings, quiet=True)


def test_report_schema(report, models):
    assert report["schema_version"] == bench.SCHEMA_VERSION == 1
    assert report["kind"] == "asanet-rt.bench"
    bench.validate_report(report)
    json.loads(json.dumps(report))  # plain JSON types only
    labels = [m["label"] for m in report["models"]]
    assert labels == ["small.pth (torch)", "small.onnx (onnxruntime)", "toy.onnx (onnxruntime)"]
    assert report["baseline"] == labels[0]
    assert [m["backend"] for m in report["models"]] == ["torch", "onnxruntime", "onnxruntime"]
    assert [m["kind"] for m in report["models"]] == ["checkpoint", "onnx", "onnx"]
    env = report["environment"]
    assert env["cpu"]["physical_cores"] >= 1 and isinstance(env["cpu"]["model"], str)
    assert "onnxruntime" in env["packages"] and "numpy" in env["packages"]
    assert report["settings"]["isolation"] == "subprocess" and report["settings"]["threads"] == 1
    for m in report["models"]:
        assert m["error"] is None, m
        assert m["precision"] == "fp32" and m["rss_peak_scope"] in ("per-config", "process")
        assert isinstance(m["peak_rss_mb"], float) and m["peak_rss_mb"] > 10
        assert isinstance(m["load_s"], float) and m["device"] == "cpu"
    assert report["models"][0]["runtime"]["mode"] == "eager" and report["models"][0]["flavour"] is None
    assert report["models"][1]["flavour"] == "portable" and report["models"][1]["runtime"]["intra_op_threads"] == 1
    assert report["models"][0]["peak_rss_ratio"] == 1.0

    # 3 models x 2 tiles x 2 batches, in model order; the toy skips tile 32 (its range starts at 64).
    assert len(report["results"]) == 12
    assert [r["model_index"] for r in report["results"]] == sorted(r["model_index"] for r in report["results"])
    skipped = [r for r in report["results"] if r["status"] == "skipped"]
    assert {(r["model_index"], r["tile"]) for r in skipped} == {(2, 32)}
    assert all("outside the model's exported range 64-512" in r["reason"] for r in skipped)
    assert all(r["vs_baseline"] is None and r["e2e"] is None for r in skipped)
    for r in report["results"]:
        if r["status"] != "ok":
            continue
        for mode in ("e2e", "compute"):
            m = r[mode]
            assert set(m) == MEASURE_KEYS
            assert m["iterations"] in (2, 3) and len(m["samples_ms"]) == m["iterations"]
            lat = m["latency_ms"]
            assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            assert lat["p50"] == pytest.approx(float(np.median(m["samples_ms"])), rel=1e-3, abs=1e-3)
            tput = r["batch"] * m["iterations"] / (sum(m["samples_ms"]) / 1e3)
            assert m["throughput"]["tiles_per_s"] == pytest.approx(tput, rel=1e-2)
            assert m["throughput"]["mpx_per_s"] == pytest.approx(tput * r["tile"] ** 2 / 1e6, rel=1e-2)
        assert r["e2e"]["timer"] == r["compute"]["timer"] == "perf_counter_ns"
        assert isinstance(r["first_call_ms"], float) and isinstance(r["peak_rss_mb"], float)
        assert r["peak_device_memory_mb"] is None


def test_ratios_against_the_first_model(report):
    base = {(r["batch"], r["tile"]): r for r in report["results"] if r["model_index"] == 0}
    for r in report["results"]:
        if r["status"] != "ok":
            continue
        ratio = r["vs_baseline"]
        ref = base[(r["batch"], r["tile"])]
        if r["model_index"] == 0:
            assert ratio == {"e2e_speedup_p50": 1.0, "compute_speedup_p50": 1.0, "e2e_throughput_ratio": 1.0,
                             "peak_rss_ratio": 1.0}
            continue
        assert ratio["e2e_speedup_p50"] == pytest.approx(
            ref["e2e"]["latency_ms"]["p50"] / r["e2e"]["latency_ms"]["p50"], rel=1e-3)
        assert ratio["compute_speedup_p50"] == pytest.approx(
            ref["compute"]["latency_ms"]["p50"] / r["compute"]["latency_ms"]["p50"], rel=1e-3)
        assert ratio["e2e_throughput_ratio"] == pytest.approx(
            r["e2e"]["throughput"]["tiles_per_s"] / ref["e2e"]["throughput"]["tiles_per_s"], rel=1e-3)


def test_table_and_markdown(report, tmp_path):
    table = bench.format_table(report)
    assert "baseline: small.pth (torch)" in table and "threads used: 1" in table
    assert "skipped: tile 32 outside" in table
    md_path = tmp_path / "bench.md"
    bench.write_markdown(report, md_path)
    md = md_path.read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | prec | batch | tile | e2e p50 ms")
    assert len(rows) == 1 + len(report["results"])
    assert sum("small.onnx (onnxruntime)" in row for row in rows) == 4
    baseline_rows = [row.split(" | ") for row in rows if row.startswith("| small.pth (torch)")]
    assert all(cells[11] == "1.00" for cells in baseline_rows)  # the × e2e column of the baseline
    json_path = tmp_path / "bench.json"
    bench.write_json(report, json_path)
    assert json.loads(json_path.read_text())["results"] == report["results"]


def test_cli_in_process_with_plot(models, tmp_path):
    out, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    argv = ["bench", str(models["toy"]), str(models["onnx"]) + "@ort", "--in-process", "--batch", "1,2", "--tile",
            "64", "--warmup", "0", "--iterations", "2", "--min-iterations", "1", "--time-budget", "0.01",
            "--threads", "1", "--mode", "e2e", "--no-samples", "--json-out", str(out), "--markdown", str(md), "-q"]
    plot = importlib.util.find_spec("matplotlib") is not None
    if plot:
        argv += ["--plot", str(png)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["settings"]["isolation"] == "in-process" and data["baseline"] == "toy.onnx (onnxruntime)"
    assert all(r["compute"] is None and r["e2e"]["samples_ms"] is None for r in data["results"])
    assert not plot or png.read_bytes()[:4] == b"\x89PNG"


def test_openvino_peer(models):
    pytest.importorskip("openvino")
    settings = bench.BenchSettings(batches=(1,), tiles=(64,), isolate=False, **FAST)
    report = bench.run_benchmark([models["onnx"]], settings, openvino=True, quiet=True)
    assert [m["label"] for m in report["models"]] == ["small.onnx (onnxruntime)", "small.onnx (openvino)"]
    ov = report["models"][1]
    assert ov["error"] is None and ov["runtime"]["openvino_config"]["INFERENCE_NUM_THREADS"] == "1"
    assert ov["runtime"]["execution_precision"] == "f32"
    assert report["results"][1]["vs_baseline"]["e2e_speedup_p50"] > 0
    # Same numbers as ONNX Runtime on the same inputs, both opened the way the worker opens them.
    optical, sar = bench.make_inputs(2, 64, seed=1)
    st = settings.resolved()
    with bench.open_model(bench.ModelSpec(str(models["onnx"]), "openvino", "x"), st) as ov_runner, \
            bench.open_model(bench.ModelSpec(str(models["onnx"]), "onnxruntime", "y"), st) as ort_runner:
        assert ov_runner.runtime_info()["intra_op_threads"] == 1 and ov_runner.precision == "f32"
        ov_runner.prepare(2, 64)
        feed = {"optical": optical, "sar": sar}
        np.testing.assert_allclose(ov_runner.infer(feed)["probabilities"], ort_runner.infer(feed)["probabilities"],
                                   atol=1e-5)


def test_bad_model_arguments(models, tmp_path):
    with pytest.raises(AsanetError, match=r"missing\.onnx: model file not found"):
        bench.parse_model(str(tmp_path / "missing.onnx"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(AsanetError, match=r"weights\.bin: unknown model file type '\.bin'"):
        bench.parse_model(str(tmp_path / "weights.bin"))
    with pytest.raises(AsanetError, match="backend openvino runs onnx files; checkpoint files run on torch"):
        bench.parse_model(f"{models['ckpt']}@openvino")
    with pytest.raises(AsanetError, match="backend tensorrt runs engine files"):
        bench.parse_model(f"{models['onnx']}@trt")
    assert bench.parse_model(f"{models['ckpt']}", torch_compile=True).backend == "torch-compile"
    with pytest.raises(AsanetError, match="--tile 16"):
        bench.BenchSettings(tiles=(16,)).resolved()
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2


def test_model_names_come_from_the_registry(models, tmp_path):
    """Every registry alias works after '@' and reports the canonical name; an '@' in a file name is a path."""
    onnx = str(models["onnx"])
    for alias, name in (("ort", "onnxruntime"), ("ov", "openvino"), ("OpenVINO", "openvino"),
                        ("cpu", "onnxruntime"), ("ort-cuda", "onnxruntime-cuda"), ("ort-trt", "onnxruntime-tensorrt")):
        assert bench.parse_model(f"{onnx}@{alias}").backend == name
    assert bench.parse_model(f"{models['ckpt']}@eager").backend == "torch"
    assert bench.parse_model(f"{models['ckpt']}@compile").backend == "torch-compile"
    odd = tmp_path / "run@2.onnx"
    odd.write_bytes(models["onnx"].read_bytes())
    assert bench.parse_model(str(odd)) == bench.ModelSpec(str(odd), "onnxruntime")
    specs = bench.expand_models([onnx, f"{onnx}@ov"], openvino=False)
    assert [s.label for s in specs] == ["small.onnx (onnxruntime)", "small.onnx (openvino)"]


def test_runner_options_follow_the_registry():
    """threads only where the backend takes them; torch_device to torch; the OpenVINO precision to OpenVINO."""
    st = bench.BenchSettings(threads=3, torch_device="cuda:1", openvino_precision="bf16").resolved()
    assert st.runner_options("onnxruntime") == {"threads": 3}
    assert st.runner_options("onnxruntime-cuda") == {"threads": 3}
    assert st.runner_options("openvino") == {"threads": 3, "precision": "bf16"}
    assert st.runner_options("torch") == {"threads": 3, "torch_device": "cuda:1"}
    assert st.runner_options("torch-compile") == {"threads": 3, "torch_device": "cuda:1"}
    assert st.runner_options("tensorrt") == st.runner_options("tensorrt_rtx") == {}


def test_cpuinfo_parsing():
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 fma avx512f avx512_vnni amx_tile\n"
    assert bench_env.parse_cpuinfo(x86) == ("AMD EPYC 9R14", ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"])
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm sve\nCPU part\t: 0xd4f\n"
    assert bench_env.parse_cpuinfo(arm) == (None, ["asimd", "sve"])
    assert bench_env.parse_cpuinfo("") == (None, [])


def test_broken_model_is_reported_not_fatal(models, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    settings = bench.BenchSettings(batches=(1,), tiles=(64,), **FAST)
    report = bench.run_benchmark([models["toy"], broken], settings, quiet=True)
    assert report["models"][0]["error"] is None
    assert "broken.onnx: not a loadable ONNX model" in report["models"][1]["error"]
    assert "error: " in bench.format_table(report)
    with pytest.raises(AsanetError, match="every model failed"):
        bench.run_benchmark([broken], settings, quiet=True)


def test_modules_do_not_import_torch():
    """bench, eval and their parts reach the export stage only through the registry, when a checkpoint is opened."""
    code = ("import sys, asanet_rt.bench, asanet_rt.bench_cli, asanet_rt.evaluate; "
            "import asanet_rt.bench.measure, asanet_rt.bench.run, asanet_rt.bench.report, asanet_rt.bench.plot; "
            "import asanet_rt.datasets, asanet_rt.labels, asanet_rt.model_summary, asanet_rt.versions; "
            "print([m for m in ('torch', 'asanet_rt.export', 'asanet_rt.engines') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, asanet_rt.cli; asanet_rt.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
