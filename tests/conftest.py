"""Shared fixtures: paths to ../shared, skip markers for what this machine lacks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASANET_SHARED", REPO.parent / "shared"))
PARITY_FIXTURE = SHARED / "reference" / "parity_fixture"


def pytest_configure(config: pytest.Config) -> None:
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


@pytest.fixture(autouse=True)
def _fixed_cpu_backend(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests run ONNX files on ONNX Runtime unless they test ``backend="auto"`` itself (they delete the variable):
    the speed probe would time every fresh toy model, and the cache goes to a temporary folder, not the user's."""
    monkeypatch.setenv("ASANET_RT_BACKEND", os.environ.get("ASANET_RT_BACKEND", "onnxruntime"))
    monkeypatch.setenv("ASANET_RT_CACHE", str(tmp_path_factory.getbasetemp() / "asanet_rt_cache"))
