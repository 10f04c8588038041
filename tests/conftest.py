"""Shared fixtures: paths to ../shared, skip markers for what this machine lacks."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASANET_SHARED", REPO.parent / "shared"))
PARITY_FIXTURE = SHARED / "reference" / "parity_fixture"


def pytest_configure(config: pytest.Config) -> None:
    # ONNX files run on ONNX Runtime unless a test checks backend="auto" itself (it deletes the variable): the
    # speed probe would time every fresh toy model. Set for the whole session, so module-scoped fixtures and
    # subprocesses see it too; the probe cache goes to a temporary folder, never the user's.
    os.environ.setdefault("ASANET_RT_BACKEND", "onnxruntime")
    os.environ.setdefault("ASANET_RT_CACHE", tempfile.mkdtemp(prefix="asanet_rt_test_cache_"))
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU (and CuPy or TensorRT); skipped without one")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on 2 CPU cores")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (the steering repo's shared/ folder; set ASANET_SHARED to point at it)")
    return SHARED


@pytest.fixture(scope="session")
def parity_fixture() -> Path:
    if not (PARITY_FIXTURE / "checkpoint.pth").is_file():
        pytest.skip(f"{PARITY_FIXTURE} is absent (official-code parity fixture lives in ../shared)")
    return PARITY_FIXTURE

