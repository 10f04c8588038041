"""``asanet-rt batch``: manifests, the sequential reference, resumability, failures, and the Ray path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from asanet_rt.batch import BatchConfig, Job, read_manifest, record_path, run_batch
from asanet_rt.cli import main
from asanet_rt.errors import AsanetError
from runtime_helpers import random_pair, toy_model, write_raster  # noqa: F401  (toy_model is a fixture)

SIZES = [(80, 96), (64, 64), (100, 72), (48, 120)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small scene pairs and a CSV manifest with relative paths (one scene without an output name)."""
    folder = tmp_path_factory.mktemp("scenes")
    (folder / "in").mkdir()
    lines = ["optical,sar,output"]
    for i, (h, w) in enumerate(SIZES):
        opt, sar = random_pair(h, w, seed=i)
        write_raster(folder / "in" / f"s2_{i}.tif", opt)
        write_raster(folder / "in" / f"s1_{i}.tif", sar)
        lines.append(f"in/s2_{i}.tif,in/s1_{i}.tif," + (f"map_{i}.tif" if i else ""))
    (folder / "scenes.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def reference(scenes: Path, toy_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    """The sequential run: the reference outputs every other mode must equal pixel for pixel."""
    out = tmp_path_factory.mktemp("seq")
    summary = run_batch(scenes / "scenes.csv", out, BatchConfig(model=str(toy_model), progress=False))
    return {"outdir": out, "summary": summary, "maps": _maps(out)}


def _maps(outdir: Path) -> dict[str, np.ndarray]:
    maps = {}
    for path in sorted(outdir.glob("*.tif")):
        with rasterio.open(path) as src:
            maps[path.name] = src.read(1)
    return maps


# -- manifests -----------------------------------------------------------------------------------------------
def test_manifest_csv_json_urls_and_errors(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("optical,sar,output\na/x.tif,/abs/y.tif,\n\n"
                                    "/vsis3/b/s2/z.tif?sig=1,/vsicurl/https://h/s1.tif,out.tif\n")
    jobs = read_manifest(tmp_path / "m.csv", tmp_path / "o")
    assert jobs[0] == Job("x_landcover.tif", str(tmp_path / "a/x.tif"), "/abs/y.tif",
                          str((tmp_path / "o/x_landcover.tif").resolve()))
    assert jobs[1].optical == "/vsis3/b/s2/z.tif?sig=1" and jobs[1].sar == "/vsicurl/https://h/s1.tif"
    assert jobs[1].name == "out.tif"
    (tmp_path / "m.json").write_text(json.dumps([{"optical": "p/a.tif", "sar": "p/b.tif"}]))
    assert read_manifest(tmp_path / "m.json", tmp_path)[0].name == "a_landcover.tif"

    bad = {
        "dup.csv": ("optical,sar\nx/a.tif,s1.tif\ny/a.tif,s2.tif\n", "also the output of"),
        "head.csv": ("opt,sar\na.tif,b.tif\n", "header must name"),
        "miss.json": (json.dumps([{"optical": "a.tif"}]), "needs both"),
        "typo.json": (json.dumps([{"optical": "a", "sar": "b", "ouput": "c"}]), "unknown field"),
        "path.csv": ("optical,sar,output\na.tif,b.tif,../c.tif\n", "plain file name"),
        "empty.csv": ("optical,sar\n", "no scenes"),
    }
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(AsanetError, match=message) as info:
            read_manifest(tmp_path / name, tmp_path)
        assert name in str(info.value)


# -- sequential: the reference -------------------------------------------------------------------------------
def test_sequential_writes_records_and_resumes(reference: dict, scenes: Path, toy_model: Path) -> None:  # noqa: F811
    out, summary = reference["outdir"], reference["summary"]
    assert (summary["done"], summary["skipped"], summary["failed"]) == (4, 0, 0)
    assert set(reference["maps"]) == {"s2_0_landcover.tif", "map_1.tif", "map_2.tif", "map_3.tif"}
    assert json.loads((out / "batch_summary.json").read_text())["done"] == 4
    record = json.loads((out / ".done" / "map_1.tif.json").read_text())
    assert record["optical"]["sha256"] and record["model_sha256"] and record["summary"]["width"] == 64

    # "interrupted": one scene lost its output and record; its partial temp file lingers
    (out / "map_2.tif").unlink()
    (out / ".done" / "map_2.tif.json").unlink()
    (out / ".map_2.tif.abc.partial").write_bytes(b"junk")
    again = run_batch(scenes / "scenes.csv", out, BatchConfig(model=str(toy_model), progress=False))
    assert (again["done"], again["skipped"]) == (1, 3)
    assert [r["name"] for r in again["results"] if r["status"] == "done"] == ["map_2.tif"]
    assert not list(out.glob(".*.partial*"))
    assert all(np.array_equal(a, reference["maps"][k]) for k, a in _maps(out).items())


def test_changed_options_or_input_invalidate_records(reference: dict, scenes: Path, toy_model: Path,  # noqa: F811
                                                     tmp_path: Path) -> None:
    shutil.copytree(scenes, tmp_path / "scenes")
    out = tmp_path / "out"
    shutil.copytree(reference["outdir"], out)
    config = BatchConfig(model=str(toy_model), progress=False)
    opt, _ = random_pair(*SIZES[3], seed=99)
    write_raster(tmp_path / "scenes" / "in" / "s2_3.tif", opt)  # a changed input
    again = run_batch(tmp_path / "scenes" / "scenes.csv", out, config)
    assert [r["name"] for r in again["results"] if r["status"] == "done"] == ["map_3.tif"]
    config.options = {"tile": 32}  # other options: other outputs, so nothing matches
    assert run_batch(tmp_path / "scenes" / "scenes.csv", out, config)["done"] == 4


def test_corrupt_input_is_reported_and_others_finish(scenes: Path, toy_model: Path, tmp_path: Path,  # noqa: F811
                                                      capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(scenes / "in", tmp_path / "in")
    (tmp_path / "in" / "s2_1.tif").write_bytes(b"not a tiff at all")
    shutil.copy(scenes / "scenes.csv", tmp_path / "scenes.csv")
    code = main(["batch", str(tmp_path / "scenes.csv"), "-o", str(tmp_path / "out"), "--model", str(toy_model),
                 "--retries", "1", "--summary", str(tmp_path / "sum.json")])
    assert code == 1
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert (summary["done"], summary["failed"]) == (3, 1)
    failure = summary["failures"][0]
    assert failure["name"] == "map_1.tif" and failure["attempts"] == 2 and "s2_1.tif" in failure["error"]
    assert not (tmp_path / "out" / "map_1.tif").exists()
    captured = capsys.readouterr()
    assert "[4/4]" in captured.err and "FAILED map_1.tif" in captured.out
    # -q silences the per-scene lines
    main(["batch", str(tmp_path / "scenes.csv"), "-o", str(tmp_path / "out"), "--model", str(toy_model),
          "--retries", "0", "-q"])
    captured = capsys.readouterr()
    assert "[" not in captured.err and "3 skipped" in captured.out


def test_cli_errors(tmp_path: Path, toy_model: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    (tmp_path / "m.csv").write_text("optical,sar\na.tif,b.tif\nc/a.tif,d.tif\n")
    assert main(["batch", str(tmp_path / "m.csv"), "-o", str(tmp_path / "o"), "--model", str(toy_model)]) == 2
    assert "a_landcover.tif" in capsys.readouterr().err


def test_unreachable_ray_address_fails_fast(tmp_path: Path, toy_model: Path) -> None:  # noqa: F811
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'asanet-rt[ray]')")
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already connected in this process")
    (tmp_path / "m.csv").write_text("optical,sar\na.tif,b.tif\n")
    with pytest.raises(AsanetError, match="no Ray head answers"):
        run_batch(tmp_path / "m.csv", tmp_path / "o", BatchConfig(model=str(toy_model), ray="127.0.0.1:1"))


# -- Ray -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'asanet-rt[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_matches_sequential_and_survives_a_killed_worker(ray_cluster, reference: dict, scenes: Path,
                                                              toy_model: Path, tmp_path: Path) -> None:  # noqa: F811
    marker = tmp_path / "crashed"
    out = tmp_path / "out"
    # the first task anywhere kills its actor process (os._exit); Ray restarts the actor and retries the scene
    summary = run_batch(scenes / "scenes.csv", out, BatchConfig(model=str(toy_model), ray="local", workers=2,
                                                                progress=False), _crash_marker=str(marker))
    assert marker.exists(), "the crash hook did not fire"
    assert (summary["mode"], summary["workers"], summary["done"], summary["failed"]) == ("ray", 2, 4, 0)
    maps = _maps(out)
    assert set(maps) == set(reference["maps"])
    for name, array in maps.items():
        assert np.array_equal(array, reference["maps"][name]), name
    assert not list(out.glob(".*.partial*"))
    # records from Ray workers are the same as the sequential ones: the reference folder is all skipped
    again = run_batch(scenes / "scenes.csv", reference["outdir"], BatchConfig(
        model=str(toy_model), ray="local", workers=2, progress=False))
    assert again["skipped"] == 4 and record_path(Job("x", "", "", str(out / "map_1.tif"))).is_file()


def test_ray_cli_reports_a_corrupt_input(ray_cluster, scenes: Path, toy_model: Path, tmp_path: Path,  # noqa: F811
                                         capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(scenes / "in", tmp_path / "in")
    (tmp_path / "in" / "s1_2.tif").write_bytes(b"\x00" * 64)
    shutil.copy(scenes / "scenes.csv", tmp_path / "scenes.csv")
    code = main(["batch", str(tmp_path / "scenes.csv"), "-o", str(tmp_path / "out"), "--model", str(toy_model),
                 "--ray", "local", "--workers", "2", "--retries", "1", "-q"])
    # not --json on stdout: Ray's driver prints its own retry notices there
    summary = json.loads((tmp_path / "out" / "batch_summary.json").read_text())
    assert "FAILED map_2.tif" in capsys.readouterr().out
    assert code == 1 and (summary["done"], summary["failed"]) == (3, 1)
    assert summary["failures"][0]["name"] == "map_2.tif" and "s1_2.tif" in summary["failures"][0]["error"]
    assert sum(w["scenes"] for w in summary["per_worker"].values()) == 3
