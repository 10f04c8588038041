"""Inputs as users hold them: GDAL paths (/vsizip/, /vsicurl/ from a local HTTP server with range requests),
per-band optical files (Sentinel-2 B04.tif, B03.tif, B02.tif) on one grid or several; a batch with a bad
manifest creates nothing."""
from __future__ import annotations

import http.server
import json
import os
import re
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from asanet_rt.batch import BatchConfig, run_batch
from asanet_rt.classifier import Classifier
from asanet_rt.cli import main
from asanet_rt.errors import AsanetError
from runtime_helpers import north_up, random_pair, toy_model, write_raster  # noqa: F401 - fixture


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP range requests (what GDAL's /vsicurl/ asks for); counts the ranges served."""

    ranges: list[str] = []

    def send_head(self):  # type: ignore[override]
        header = self.headers.get("Range")
        path = self.translate_path(self.path)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", header or "")
        if not match or not os.path.isfile(path):
            return super().send_head()
        f = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        size = os.fstat(f.fileno()).st_size
        start = int(match[1]) if match[1] else max(0, size - int(match[2] or 0))
        end = min(int(match[2]), size - 1) if match[1] and match[2] else size - 1
        if start >= size:
            f.close()
            self.send_error(416)
            return None
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        f.seek(start)
        self._left = end - start + 1
        type(self).ranges.append(header)
        return f

    def copyfile(self, source, outputfile):  # type: ignore[override]
        left = getattr(self, "_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(left))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder served on 127.0.0.1 (a free port); yields the folder and its base URL."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = type("Handler", (_RangeHandler,), {"ranges": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("pair")
    opt, sar = random_pair(96, 128, seed=11)
    return {"folder": folder, "opt": opt, "sar": sar, "optical": write_raster(folder / "s2.tif", opt),
            "sar_path": write_raster(folder / "s1.tif", sar)}


@pytest.fixture(scope="module")
def clf(toy_model: Path) -> Iterator[Classifier]:  # noqa: F811
    with Classifier.open(toy_model) as classifier:
        yield classifier


@pytest.fixture(scope="module")
def reference(clf: Classifier, pair: dict, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    out = tmp_path_factory.mktemp("ref") / "lc.tif"
    clf.classify_scene(pair["optical"], pair["sar_path"], out)
    return _read(out)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_vsizip_inputs(clf: Classifier, pair: dict, reference: np.ndarray, tmp_path: Path) -> None:
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(pair["optical"], "s2/s2.tif")
        z.write(pair["sar_path"], "s1/s1.tif")
    out = tmp_path / "lc.tif"
    assert main(["classify", f"/vsizip/{archive}/s2/s2.tif", f"/vsizip/{archive}/s1/s1.tif", "-o", str(out),
                 "--model", clf.path, "--no-progress"]) == 0
    assert np.array_equal(_read(out), reference)
    with pytest.raises(AsanetError, match=r"/vsizip/.*/nothere\.tif: not found or not a readable raster"):
        clf.classify_scene(f"/vsizip/{archive}/nothere.tif", pair["sar_path"], tmp_path / "x.tif")


def test_vsicurl_inputs_with_range_requests(clf: Classifier, pair: dict, reference: np.ndarray, tmp_path: Path,
                                            http_folder: tuple) -> None:
    www, url, handler = http_folder
    for name in ("optical", "sar_path"):
        (www / pair[name].name).write_bytes(pair[name].read_bytes())
    out = tmp_path / "lc.tif"
    clf.classify_scene(f"/vsicurl/{url}/s2.tif", f"/vsicurl/{url}/s1.tif", out)
    assert np.array_equal(_read(out), reference)
    assert handler.ranges, "GDAL read the files without range requests"
    with pytest.raises(AsanetError, match=r"/vsicurl/http://127\.0\.0\.1:\d+/gone\.tif: not found"):
        clf.classify_scene(f"/vsicurl/{url}/gone.tif", pair["sar_path"], tmp_path / "x.tif")


def _band_files(folder: Path, opt: np.ndarray, coarse_blue: bool = False) -> list[Path]:
    """Sentinel-2 style single-band files B04 (red), B03 (green), B02 (blue); blue on a 20 m grid if asked."""
    paths = [write_raster(folder / "B04.tif", opt[0]), write_raster(folder / "B03.tif", opt[1])]
    blue = opt[2]
    if coarse_blue:
        h, w = blue.shape
        blue = blue.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).astype(np.uint8)
        paths.append(write_raster(folder / "B02.tif", blue, transform=north_up(500000, 6000000, 20)))
    else:
        paths.append(write_raster(folder / "B02.tif", blue))
    return paths


def test_per_band_optical_files(clf: Classifier, pair: dict, reference: np.ndarray, tmp_path: Path) -> None:
    red, green, blue = _band_files(tmp_path, pair["opt"])
    out = tmp_path / "lc.tif"
    # listed in another order: the file names (Sentinel-2 band codes) say which is which
    assert main(["classify", f"{blue},{green},{red}", str(pair["sar_path"]), "-o", str(out), "--model", clf.path,
                 "--no-progress", "--quicklook", str(tmp_path / "lc.png")]) == 0
    assert np.array_equal(_read(out), reference)
    assert (tmp_path / "lc.png").stat().st_size > 0
    with pytest.raises(AsanetError, match=r"s2\.tif: has 3 bands; in a list of per-band optical files"):
        clf.classify_scene([red, pair["optical"], blue], pair["sar_path"], tmp_path / "x.tif")


def test_per_band_files_on_differing_grids_are_aligned(clf: Classifier, pair: dict, reference: np.ndarray,
                                                      tmp_path: Path) -> None:
    red, green, blue = _band_files(tmp_path, pair["opt"], coarse_blue=True)
    out = tmp_path / "lc.tif"
    summary = clf.classify_scene([red, green, blue], pair["sar_path"], out)
    assert (summary.width, summary.height) == (128, 96)
    # the same as a stack whose blue band was warped onto the 10 m grid (as the SAR would be)
    with rasterio.open(red) as ref, rasterio.open(blue) as src, WarpedVRT(
            src, crs=ref.crs, transform=ref.transform, width=ref.width, height=ref.height,
            resampling=Resampling.bilinear, nodata=float("nan"), dtype="float32") as vrt:
        warped = vrt.read(1)
    stack = np.stack([pair["opt"][0], pair["opt"][1], warped]).astype(np.float32)
    stacked = write_raster(tmp_path / "stack.tif", np.nan_to_num(stack, nan=-1), nodata=-1)
    clf.classify_scene(stacked, pair["sar_path"], tmp_path / "lc_stack.tif", optical_scale="none")
    assert np.array_equal(_read(out), _read(tmp_path / "lc_stack.tif"))
    assert (_read(out) == 255).any() == np.isnan(warped).any()
    # the first file sets the grid: with the 20 m band first the map is on the 20 m grid
    summary = clf.classify_scene([blue, green, red], pair["sar_path"], tmp_path / "lc20.tif")
    assert (summary.width, summary.height) == (64, 48)


def test_batch_per_band_and_vsicurl_rows(clf: Classifier, pair: dict, reference: np.ndarray, tmp_path: Path,
                                        http_folder: tuple) -> None:
    www, url, handler = http_folder
    scene = tmp_path / "scene_a"
    scene.mkdir()
    _band_files(scene, pair["opt"])
    for name in ("optical", "sar_path"):
        (www / pair[name].name).write_bytes(pair[name].read_bytes())
    (tmp_path / "m.csv").write_text(
        "optical,sar,output\n"
        f'"scene_a/B04.tif,scene_a/B03.tif,scene_a/B02.tif",{pair["sar_path"]},\n'
        f"/vsicurl/{url}/s2.tif,/vsicurl/{url}/s1.tif,remote.tif\n")
    summary = run_batch(tmp_path / "m.csv", tmp_path / "out", BatchConfig(model=clf.path, progress=False))
    assert (summary["done"], summary["failed"]) == (2, 0), summary["failures"]
    assert np.array_equal(_read(tmp_path / "out" / "scene_a_landcover.tif"), reference)
    assert np.array_equal(_read(tmp_path / "out" / "remote.tif"), reference)
    assert handler.ranges
    again = run_batch(tmp_path / "m.csv", tmp_path / "out", BatchConfig(model=clf.path, progress=False))
    assert again["skipped"] == 2
    # JSON: per-band files as a list; the same scene, so its record matches
    (tmp_path / "m.json").write_text(json.dumps([{"optical": [f"scene_a/B0{i}.tif" for i in (4, 3, 2)],
                                                 "sar": str(pair["sar_path"])}]))
    assert run_batch(tmp_path / "m.json", tmp_path / "out", BatchConfig(model=clf.path, progress=False))["skipped"] == 1


@pytest.mark.parametrize("manifest", ["optical,sar\n", "nope\n", "[{\"optical\": \"a.tif\"}]"])
def test_batch_with_a_bad_manifest_creates_nothing(toy_model: Path, tmp_path: Path, manifest: str) -> None:  # noqa: F811
    (tmp_path / "m.csv").write_text(manifest)
    with pytest.raises(AsanetError):
        run_batch(tmp_path / "m.csv", tmp_path / "new" / "out", BatchConfig(model=str(toy_model), progress=False))
    assert not (tmp_path / "new").exists()
    (tmp_path / "ok.csv").write_text("optical,sar\na.tif,b.tif\n")
    with pytest.raises(AsanetError, match="model not found"):
        run_batch(tmp_path / "ok.csv", tmp_path / "new", BatchConfig(model=str(tmp_path / "none.onnx")))
    assert not (tmp_path / "new").exists()
