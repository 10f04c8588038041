"""Shared fixtures: the official-code parity fixture (tests/data/parity), markers."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # ONNX files run on ONNX Runtime unless a test checks backend="auto" itself (it deletes the variable): the
    # speed probe would time every fresh toy model. Set for the whole session, so module-scoped fixtures and
    # subprocesses see it too; the probe cache goes to a temporary folder, never the user's.
    os.environ.setdefault("ASANET_RT_BACKEND", "onnxruntime")
    os.environ.setdefault("ASANET_RT_CACHE", tempfile.mkdtemp(prefix="asanet_rt_test_cache_"))
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU (and CuPy or TensorRT); skipped without one")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on 2 CPU cores")


@pytest.fixture(scope="session")
def parity_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the official fixture: checkpoint.pth (rebuilt byte for byte), inputs.npz, outputs.npz."""
    from parity_data import PARITY_DATA, rebuild_checkpoint

    folder = tmp_path_factory.mktemp("parity_fixture")
    rebuild_checkpoint(folder / "checkpoint.pth")
    for name in ("inputs.npz", "outputs.npz"):
        (folder / name).symlink_to(PARITY_DATA / name)
    return folder
