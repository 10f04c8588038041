"""Engine container and compatibility checks: no TensorRT, no GPU, no builds."""
from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from asanet_rt.engine_file import (NO_GPU, EngineFileError, EngineInfo, IncompatibleEngineError, check_compatible,
                                   extract_plan, is_engine_file, read_engine, read_engine_info, write_engine_file)
from asanet_rt.errors import AsanetError
from toy_models import toy_metadata

PLAN = bytes(range(256)) * 40


def fake_info(**changes: object) -> EngineInfo:
    """An engine header as TensorRT 10.8 on Jetson Orin (sm_87) would have written it."""
    base = EngineInfo(
        model=toy_metadata(), backend="tensorrt", backend_version="10.8.0.43", compute_capability="8.7",
        device_name="Orin", precision="fp16", export_precision="fp16",
        profiles=({"optical": {"min": [1, 3, 32, 32], "opt": [4, 3, 512, 512], "max": [4, 3, 512, 512]},
                   "sar": {"min": [1, 1, 32, 32], "opt": [4, 1, 512, 512], "max": [4, 1, 512, 512]}},),
        compatibility={"hardware": "none", "version_compatible": False, "rtx_targets": []},
        plugins={"mode": "v3", "used": ["sfm_0"], "library": "libasanet_plugins.so", "library_sha256": "ab" * 32},
        onnx_file="model.onnx", onnx_sha256="cd" * 32)
    return dataclasses.replace(base, **changes)


def test_container_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.engine"
    written = write_engine_file(path, fake_info(), PLAN)
    assert is_engine_file(path) and not is_engine_file(tmp_path / "missing.engine")
    info = read_engine_info(path)
    assert info == written
    assert info.engine_bytes == len(PLAN) and info.batch_range == (1, 4) and info.tile_range == (32, 512)
    assert info.model.classes == toy_metadata().classes
    info2, plan = read_engine(path)
    assert plan == PLAN and info2 == info
    assert extract_plan(path, tmp_path / "model.plan").read_bytes() == PLAN
    # temp files are 0600; an engine must be readable by others like any output (umask permitting)
    assert stat.S_IMODE(path.stat().st_mode) & 0o600 == 0o600
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_container_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "model.engine"
    write_engine_file(path, fake_info(), PLAN)
    with pytest.raises(AsanetError, match="exists"):
        write_engine_file(path, fake_info(), b"other")
    assert read_engine(path)[1] == PLAN
    write_engine_file(path, fake_info(), b"other", overwrite=True)
    assert read_engine(path)[1] == b"other"


def test_container_errors(tmp_path: Path) -> None:
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"ftrt" + PLAN)
    with pytest.raises(EngineFileError, match="bare TensorRT engine"):
        read_engine_info(bare)
    path = tmp_path / "model.engine"
    write_engine_file(path, fake_info(), PLAN)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.engine"
    truncated.write_bytes(data[:-10])
    with pytest.raises(EngineFileError, match="truncated"):
        read_engine_info(truncated)
    corrupt = tmp_path / "corrupt.engine"
    corrupt.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    read_engine(corrupt, verify=False)
    with pytest.raises(EngineFileError, match="sha256"):
        read_engine(corrupt)
    newer = tmp_path / "newer.engine"
    newer.write_bytes(data[:8] + (99).to_bytes(4, "little") + data[12:])
    with pytest.raises(EngineFileError, match="newer"):
        read_engine_info(newer)
    with pytest.raises(EngineFileError, match="not found"):
        read_engine_info(tmp_path / "nope.engine")


def test_header_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "model.engine"
    write_engine_file(path, fake_info(), PLAN)
    raw = path.read_bytes()
    header = json.loads(raw[40:40 + int.from_bytes(raw[16:24], "little")])
    assert header["backend"] == "tensorrt" and header["model"]["export"]["precision"] == "fp32"
    assert int.from_bytes(raw[24:32], "little") % 4096 == 0


def test_compatible_same_version_and_gpu() -> None:
    check_compatible(fake_info(), "10.8.0.43", "8.7")
    check_compatible(fake_info(), "10.8.0.40", (8, 7))        # build number differs: same release
    check_compatible(fake_info(), "10.8.0", None)             # GPU unknown: version checked only


def test_incompatible_version_and_gpu_message() -> None:
    with pytest.raises(IncompatibleEngineError) as exc:
        check_compatible(fake_info(), "11.1.0.2", "sm_90", path="model.engine")
    message = str(exc.value)
    assert "built by TensorRT 10.8.0 for sm_87 (Orin)" in message
    assert "this is TensorRT 11.1.0 on sm_90" in message
    assert "asanet-rt build model.onnx -o model.engine" in message


def test_incompatible_gpu_same_version() -> None:
    with pytest.raises(IncompatibleEngineError, match=r"sm_87.*sm_86"):
        check_compatible(fake_info(), "10.8.0", "8.6")


def test_version_compatible_engine() -> None:
    info = fake_info(compatibility={"hardware": "none", "version_compatible": True})
    check_compatible(info, "10.9.1", "8.7")
    with pytest.raises(IncompatibleEngineError, match="version compatibility"):
        check_compatible(info, "10.7.0", "8.7")
    # NVIDIA's rule (TensorRT 11.4 support matrix): TensorRT 10 version-compatible engines run on TensorRT 11,
    # TensorRT 8 ones on 10; no other cross-major pair, and never on an older runtime.
    check_compatible(info, "11.0.0", "8.7")
    check_compatible(info, "11.4.0.106", "8.7")
    with pytest.raises(IncompatibleEngineError, match=r"runs on TensorRT 10\.x from 10\.8\.0 on and on TensorRT 11\.x"):
        check_compatible(info, "12.0.0", "8.7")
    eleven = fake_info(backend_version="11.1.0", compatibility={"hardware": "none", "version_compatible": True})
    check_compatible(eleven, "11.4.0", "8.7")
    with pytest.raises(IncompatibleEngineError, match="version compatibility"):
        check_compatible(eleven, "10.16.0", "8.7")
    with pytest.raises(IncompatibleEngineError, match="version compatibility"):
        check_compatible(eleven, "11.0.0", "8.7")


@pytest.mark.parametrize("built,runtime,runs", [
    ((10, 3, 0), (10, 3, 0), True), ((10, 3, 0), (10, 16, 1), True), ((10, 9, 0), (10, 8, 0), False),
    ((10, 3, 0), (11, 0, 0), True), ((10, 16, 0), (11, 4, 0), True), ((11, 0, 0), (10, 16, 0), False),
    ((8, 6, 1), (10, 3, 0), True), ((8, 6, 1), (9, 0, 0), False), ((8, 6, 1), (11, 4, 0), False),
    ((8, 5, 3), (8, 6, 1), False), ((10, 3, 0), (12, 0, 0), False)])
def test_version_compatibility_rule(built, runtime, runs) -> None:
    from asanet_rt.engine_file import version_compatible_runs

    assert version_compatible_runs(built, runtime) is runs


def test_hardware_compatible_engine() -> None:
    info = fake_info(compute_capability="8.6", device_name="RTX 3090",
                     compatibility={"hardware": "ampere_plus", "version_compatible": False})
    check_compatible(info, "10.8.0", "8.9")
    check_compatible(info, "10.8.0", "12.0")
    with pytest.raises(IncompatibleEngineError, match="sm_75"):
        check_compatible(info, "10.8.0", "7.5")


def test_rtx_engine_checks() -> None:
    info = fake_info(backend="tensorrt_rtx", backend_version="1.7.1.116", compute_capability=NO_GPU,
                     device_name="", compatibility={"hardware": "rtx_portable", "rtx_targets": []})
    check_compatible(info, "1.7.1.116", "8.6", backend="tensorrt_rtx")
    check_compatible(info, "1.7.1.116", "12.0", backend="tensorrt_rtx")
    with pytest.raises(IncompatibleEngineError, match="Turing"):
        check_compatible(info, "1.7.1", "7.5")
    with pytest.raises(IncompatibleEngineError, match="does not support this GPU; use full TensorRT"):
        check_compatible(info, "1.7.1", "9.0")     # H100/H200: RTX 1.7.1 refuses Hopper
    check_compatible(info, "1.7.1", "12.1")
    with pytest.raises(IncompatibleEngineError, match=r"TensorRT-RTX 1\.7\.1.*this is TensorRT-RTX 1\.8\.0"):
        check_compatible(info, "1.8.0", "8.6")
    with pytest.raises(IncompatibleEngineError, match="run only on TensorRT-RTX"):
        check_compatible(info, "10.8.0", "8.6", backend="tensorrt")
    pinned = dataclasses.replace(info, compatibility={"hardware": "rtx_portable", "rtx_targets": ["8.6"]})
    check_compatible(pinned, "1.7.1", "8.6")
    with pytest.raises(IncompatibleEngineError, match="sm_86"):
        check_compatible(pinned, "1.7.1", "8.9")


def test_oversized_header_is_refused_unread(tmp_path: Path) -> None:
    import struct

    from asanet_rt.engine_file import MAX_HEADER_BYTES

    path = tmp_path / "huge.engine"
    write_engine_file(path, fake_info(), PLAN)
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, 16, MAX_HEADER_BYTES + 1)  # the declared header length
    path.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match="more than the"):
        read_engine_info(path)


def test_plan_size_must_match_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.engine"
    write_engine_file(path, fake_info(), PLAN)
    good = path.read_bytes()
    path.write_bytes(good + b"trailing bytes the header does not declare")
    with pytest.raises(EngineFileError, match="the file has"):
        read_engine_info(path)
    path.write_bytes(good[:-10])
    with pytest.raises(EngineFileError, match="truncated"):
        read_engine(path)


def test_malformed_header(tmp_path: Path) -> None:
    with pytest.raises(EngineFileError, match="malformed"):
        EngineInfo.from_dict({"backend": "tensorrt"}, "x.engine")
