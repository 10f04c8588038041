"""Fault injection on the commands as users run them (subprocesses): full disk, file size limit, read-only output,
SIGINT / SIGTERM / SIGKILL mid-run, an output path that is a folder, sidecars already present.

Each case checks the exit status, one clear error line on stderr (no traceback, no raw GDAL lines) and that the
output folder holds exactly what it held before, or exactly the finished outputs.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

from runtime_helpers import listing, random_pair, toy_model, write_raster  # noqa: F401 - fixture

CLI = [sys.executable, "-m", "asanet_rt.cli"]
#: What GDAL or libtiff would print by themselves; none of it may reach the user.
RAW = ("Traceback", "CPLE_", "GDAL signalled", "ERROR 1:", "_tiffWriteProc", "TIFFAppendToStrip")
FINISHED = ["lc.qml", "lc.tif", "lc.tif.aux.xml"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A small pair (128 x 160) and a long one (1536 x 1536, about a second of work on 2 cores)."""
    folder = tmp_path_factory.mktemp("inputs")
    pairs = {}
    for name, (h, w) in {"small": (128, 160), "long": (1536, 1536)}.items():
        opt, sar = random_pair(h, w, seed=3)
        pairs[name] = (write_raster(folder / f"{name}_s2.tif", opt), write_raster(folder / f"{name}_s1.tif", sar))
    return pairs


def classify(toy: Path, pair: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return CLI + ["classify", str(pair[0]), str(pair[1]), "-o", str(out), "--model", str(toy), "--no-progress",
                  *extra]


def run(cmd: Sequence[str], limit: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``cmd``; ``limit`` caps the size of any file it writes (RLIMIT_FSIZE, in bytes)."""
    def preexec() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


def one_error(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The exit status is ``code`` and stderr ends with exactly one error line holding ``words``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert not any(raw in result.stderr for raw in RAW), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("asanet-rt ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


# -- the output path -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_is_a_folder(toy_model: Path, scenes: dict, tmp_path: Path, overwrite: bool) -> None:  # noqa: F811
    target = tmp_path / "lc.tif"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    before = listing(tmp_path)
    extra = ["--overwrite", "--confidence", str(tmp_path / "c.tif"), "--quicklook", str(tmp_path / "q.png")] \
        if overwrite else []
    started = time.perf_counter()
    result = run(classify(toy_model, scenes["small"], target, *extra))
    one_error(result, 2, "lc.tif", "is a folder")
    assert listing(tmp_path) == before and listing(target) == ["keep.txt"]
    assert "tiles of" not in result.stderr, "the scene was processed before the refusal"
    assert time.perf_counter() - started < 60


@pytest.mark.parametrize("sidecar", ["lc.qml", "lc.tif.aux.xml"])
def test_existing_sidecar_follows_the_overwrite_rule(toy_model: Path, scenes: dict, tmp_path: Path,  # noqa: F811
                                                     sidecar: str) -> None:
    (tmp_path / sidecar).write_text("the user's own style")
    before = listing(tmp_path)
    one_error(run(classify(toy_model, scenes["small"], tmp_path / "lc.tif")), 2, sidecar, "--overwrite")
    assert listing(tmp_path) == before and (tmp_path / sidecar).read_text() == "the user's own style"
    assert run(classify(toy_model, scenes["small"], tmp_path / "lc.tif", "--overwrite")).returncode == 0
    assert listing(tmp_path) == FINISHED and (tmp_path / sidecar).read_text() != "the user's own style"


# -- full disk, size limit, read-only ------------------------------------------------------------------------
def test_file_size_limit_in_classify(toy_model: Path, scenes: dict, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "old.txt").write_text("unrelated")
    before = listing(tmp_path)
    result = run(classify(toy_model, scenes["long"], tmp_path / "lc.tif", "--confidence", str(tmp_path / "c.tif")),
                 limit=64 << 10)
    one_error(result, 1, str(tmp_path / "lc.tif"), "file size limit", "nothing was written")
    assert listing(tmp_path) == before


def _mount(args: Sequence[str], what: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip(f"{what} needs root and mount(8)")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"{what}: mount is not permitted here ({done.stderr.strip()})")


@pytest.fixture()
def full_disk(tmp_path: Path):
    """A 200 KB tmpfs (skipped where mounting is not allowed)."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=200k", "tmpfs", str(folder)], "a small tmpfs")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_disk_full_in_classify(toy_model: Path, scenes: dict, full_disk: Path) -> None:  # noqa: F811
    (full_disk / "old.txt").write_text("unrelated")
    before = listing(full_disk)
    result = run(classify(toy_model, scenes["long"], full_disk / "lc.tif", "--confidence",
                          str(full_disk / "c.tif")))
    one_error(result, 1, str(full_disk / "lc.tif"), "no space left", "nothing was written")
    assert listing(full_disk) == before


@pytest.fixture()
def read_only(tmp_path: Path):
    """A folder with a file in it, then made read-only by a read-only bind mount, else ``chattr +i``."""
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "old.txt").write_text("unrelated")
    if os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
            ["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode == 0:
            yield folder
        subprocess.run(["umount", str(folder)], check=False)
        return
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=False)
        return
    pytest.skip("cannot make a folder read-only here (no bind mount, no chattr; root ignores permission bits)")


def test_read_only_folder_in_classify(toy_model: Path, scenes: dict, read_only: Path) -> None:  # noqa: F811
    if os.access(read_only, os.W_OK) and not os.statvfs(read_only).f_flag & os.ST_RDONLY:
        try:
            (read_only / "probe").touch()
        except OSError:
            pass
        else:
            pytest.skip("the folder is still writable")
    result = run(classify(toy_model, scenes["small"], read_only / "lc.tif"))
    one_error(result, 1, str(read_only / "lc.tif"))
    assert "tiles of" not in result.stderr, "refused only after the work"
    assert listing(read_only) == ["old.txt"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="export needs torch (the `export` extra)")
    from model_utils import write_small_checkpoint

    return write_small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pth")


def test_file_size_limit_in_export(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run(CLI + ["export", str(checkpoint), "-o", str(out / "m.onnx"), "--tile", "32:64", "--no-simplify"],
                 limit=32 << 10,
                 timeout=300)
    one_error(result, 1, str(out / "m.onnx"), "file size limit")
    assert listing(out) == []


def test_disk_full_in_export(checkpoint: Path, full_disk: Path) -> None:
    result = run(CLI + ["export", str(checkpoint), "-o", str(full_disk / "m.onnx"), "--tile", "32:64",
                        "--no-simplify"], timeout=300)
    one_error(result, 1, str(full_disk / "m.onnx"), "no space left", "nothing was written")
    assert listing(full_disk) == []


def test_disk_full_when_writing_an_engine(full_disk: Path) -> None:
    """``build`` writes its engine through ``write_engine_file`` (building needs TensorRT; writing does not)."""
    from asanet_rt.engine_file import write_engine_file
    from asanet_rt.errors import OutputError
    from test_engines_file import fake_info

    with pytest.raises(OutputError, match=r"m\.engine: cannot write: no space left on device") as err:
        write_engine_file(full_disk / "m.engine", fake_info(), bytes(1 << 20))
    assert err.value.exit_code == 1 and listing(full_disk) == []


def test_export_and_build_refuse_a_folder_or_a_read_only_output(checkpoint: Path, toy_model: Path,  # noqa: F811
                                                                 read_only: Path, tmp_path: Path) -> None:
    (tmp_path / "m.onnx").mkdir()
    one_error(run(CLI + ["export", str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--overwrite"], timeout=300),
              2, "is a folder")
    one_error(run(CLI + ["build", str(toy_model), "-o", str(tmp_path / "m.onnx"), "--overwrite"]), 2, "is a folder")
    one_error(run(CLI + ["build", str(toy_model), "-o", str(read_only / "m.engine")]), 1, "m.engine")
    one_error(run(CLI + ["export", str(checkpoint), "-o", str(read_only / "m.onnx")], timeout=300), 1, "m.onnx",
              "read-only file system")
    assert listing(read_only) == ["old.txt"] and listing(tmp_path / "m.onnx") == []


def test_file_size_limit_when_writing_an_engine(tmp_path: Path) -> None:
    """``build`` writes its engine through ``write_engine_file``: a 1 MB engine under a 64 KB limit."""
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from test_engines_file import fake_info\n"
              "from asanet_rt.engine_file import write_engine_file\n"
              "from asanet_rt.errors import OutputError\n"
              "try:\n"
              f"    write_engine_file({str(tmp_path / 'm.engine')!r}, fake_info(), bytes(1 << 20))\n"
              "except OutputError as exc:\n"
              "    print(exc); sys.exit(exc.exit_code)\n")
    result = run([sys.executable, "-c", script], limit=64 << 10)
    assert result.returncode == 1 and "m.engine: cannot write: file too large" in result.stdout, result
    assert listing(tmp_path) == []


# -- signals -------------------------------------------------------------------------------------------------
def _wait_for(folder: Path, ready: Callable[[list[Path]], bool], proc: subprocess.Popen, timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if ready(list(folder.iterdir())):
            return True
        time.sleep(0.005)
    return False


def _started(files: list[Path]) -> bool:
    return any(f.name.endswith(".partial") for f in files)


def _staging(files: list[Path]) -> bool:
    return any(f.name.endswith(".stage.tif") and f.stat().st_size > 0 for f in files if f.exists())


def _cog(files: list[Path]) -> bool:
    return any(f.name.startswith(".lc.tif.") and f.name.endswith(".partial") and f.stat().st_size > 0
               for f in files if f.exists())


@pytest.mark.parametrize("point", [_started, _staging, _cog], ids=["start", "streaming", "cog"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_run_leaves_nothing(toy_model: Path, scenes: dict, tmp_path: Path, sig: int,  # noqa: F811
                                       point: Callable) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(classify(toy_model, scenes["long"], out / "lc.tif", "--confidence",
                                     str(out / "c.tif")), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reached = _wait_for(out, point, proc)
    if reached:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if proc.returncode == 0:  # the signal came after the last rename: the finished outputs, nothing else
        assert point is _cog, f"the run finished before the signal ({'sent' if reached else 'not sent'})"
        assert listing(out) == ["c.tif"] + FINISHED
        return
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    one_error(result, 130 if sig == signal.SIGINT else 128 + signal.SIGTERM, word)
    # nothing, or (a signal held back during the final renames) every output complete
    assert listing(out) in ([], ["c.tif"] + FINISHED)


def test_leftovers_of_a_killed_run_are_removed_by_the_next(toy_model: Path, scenes: dict,  # noqa: F811
                                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(classify(toy_model, scenes["long"], out / "lc.tif"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert _wait_for(out, _staging, proc), "the run ended before its staging file appeared"
    proc.kill()  # SIGKILL: no handler runs, the temporary files stay
    proc.wait()
    left = listing(out)
    assert left and all(".partial" in name for name in left)
    result = run(classify(toy_model, scenes["small"], out / "lc.tif"))
    assert result.returncode == 0, result.stderr
    assert "interrupted earlier run" in result.stderr
    assert listing(out) == FINISHED


def test_temporary_files_of_a_live_run_are_left_alone(tmp_path: Path) -> None:
    from asanet_rt.io_utils import _owner_tag, remove_leftovers

    mine = tmp_path / f".lc.tif.{_owner_tag()}.abc123.partial"  # this process is alive
    dead = tmp_path / f".lc.tif.{_owner_tag().rsplit('-', 1)[0]}-{2 ** 22 + 17}.abc123.partial.stage.tif"
    legacy = tmp_path / ".lc.tif.k2j4h5.partial"
    other = tmp_path / ".lc.tif.otherhost-1.abc123.partial"
    for f in (mine, dead, legacy, other):
        f.write_bytes(b"x")
    assert sorted(remove_leftovers(tmp_path / "lc.tif")) == sorted([dead, legacy])
    assert listing(tmp_path) == sorted([mine.name, other.name])
    assert sorted(remove_leftovers(tmp_path / "lc.tif", any_owner=True)) == sorted([mine, other])


# -- bad inputs that used to pass or crash ------------------------------------------------------------------
def test_bad_sar_band_is_refused_before_reading(toy_model: Path, scenes: dict, tmp_path: Path) -> None:  # noqa: F811
    for band in ("0", "-1"):
        result = run(classify(toy_model, scenes["small"], tmp_path / "lc.tif", "--sar-band", band))
        one_error(result, 2, "--sar-band")
        assert "IndexError" not in result.stderr and listing(tmp_path) == []


def test_empty_scene_is_an_error_unless_allowed(toy_model: Path, tmp_path: Path) -> None:  # noqa: F811
    opt, sar = random_pair(64, 96, seed=5)
    nodata_opt = write_raster(tmp_path / "opt0.tif", np.zeros_like(opt), nodata=0)
    nan_sar = write_raster(tmp_path / "sar_nan.tif", np.full(sar.shape, np.nan, np.float32))
    good_opt, good_sar = write_raster(tmp_path / "opt.tif", opt), write_raster(tmp_path / "sar.tif", sar)
    out = tmp_path / "out"
    out.mkdir()
    one_error(run(classify(toy_model, (nodata_opt, good_sar), out / "lc.tif")), 2, "no pixel has both sensors",
              "optical", "--allow-empty")
    one_error(run(classify(toy_model, (good_opt, nan_sar), out / "lc.tif", "--sar-scale", "none")), 2,
              "no pixel has both sensors", "SAR")
    assert listing(out) == []
    result = run(classify(toy_model, (good_opt, nan_sar), out / "lc.tif", "--sar-scale", "none", "--allow-empty"))
    assert result.returncode == 0, result.stderr
    assert listing(out) == FINISHED


def test_one_class_map_and_off_scale_inputs_warn(toy_model: Path, tmp_path: Path) -> None:  # noqa: F811
    flat = write_raster(tmp_path / "hazy.tif", np.full((3, 96, 96), 250, np.uint8))
    sar = write_raster(tmp_path / "sar.tif", np.full((1, 96, 96), 120, np.uint8))
    result = run(classify(toy_model, (flat, sar), tmp_path / "lc.tif"))
    assert result.returncode == 0, result.stderr
    assert "warning: the map is 100.0 % one class" in result.stdout
    assert "warning: the inputs look unlike the model's training data (red mean 250" in result.stdout


def test_gdal_messages_stay_out_of_the_error(toy_model: Path, scenes: dict, tmp_path: Path) -> None:  # noqa: F811
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x07" * 200)
    result = run(classify(toy_model, (broken, scenes["small"][1]), tmp_path / "lc.tif"))
    one_error(result, 2, "broken.tif", "not a readable raster")
    verbose = run(CLI + ["-v"] + classify(toy_model, (broken, scenes["small"][1]), tmp_path / "lc.tif")[3:])
    assert "GDAL signalled" in verbose.stderr  # still there for whoever asks
