"""Reading checkpoint files from strangers: official mmengine files load, malicious pickles are refused unrun."""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
import time
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from asanet_rt.errors import AsanetError
from asanet_rt.export import checkpoint_file as cf
from asanet_rt.export.checkpoint_file import CheckpointError, read_checkpoint

CLASSES = ("buildings", "roads", "greenery", "water", "farmland")
ENV_FLAGS = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


class HistoryBuffer:
    """Test double of mmengine's HistoryBuffer: a real Python class, so a trusted unpickler would use it."""

    def __init__(self, values: list[float] | None = None) -> None:
        self._log_history = np.asarray(values or [], dtype=np.float64)
        self._count_history = np.ones(len(self._log_history), dtype=np.int64)
        self._statistics_methods = {"min": HistoryBuffer.min, "mean": HistoryBuffer.mean}

    def min(self) -> float:
        return float(self._log_history.min())

    def max(self) -> float:
        return float(self._log_history.max())

    def mean(self) -> float:
        return float(self._log_history.mean())

    def current(self) -> float:
        return float(self._log_history[-1])


class Call:
    """Pickles as ``func(*args)``: how a malicious file smuggles a call into unpickling."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # pickle insists that a reduce target be callable
        raise AssertionError("never called while saving")


@pytest.fixture
def fake_mmengine(monkeypatch: pytest.MonkeyPatch) -> type:
    """Install ``mmengine.logging.history_buffer.HistoryBuffer`` (our double) for saving and trusted loading."""
    for flag in ENV_FLAGS:
        monkeypatch.delenv(flag, raising=False)
    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules[names[-1]], "HistoryBuffer", HistoryBuffer, raising=False)
    monkeypatch.setattr(HistoryBuffer, "__module__", names[-1])
    return HistoryBuffer


def small_state_dict() -> OrderedDict:
    torch.manual_seed(0)
    state = OrderedDict(
        [("backbone.w", torch.randn(3, 4)), ("decode_head.b", torch.arange(5)), ("n", torch.tensor(7)),
         ("half", torch.ones(2, dtype=torch.bfloat16))])
    state["view"] = state["backbone.w"][1:, ::2]  # a strided view sharing storage
    return state


def mmengine_checkpoint(hb: type) -> dict:
    """What mmengine's CheckpointHook writes, in small: meta, state_dict, message_hub with numpy values."""
    return {
        "meta": {"epoch": 1, "iter": 8, "cfg": "crop_size = (256, 256)\n", "seed": np.int64(42),
                 "dataset_meta": {"classes": CLASSES, "palette": [[255, 0, 0]] * 5},
                 "arr": np.arange(6, dtype=">i4").reshape(2, 3), "flags": np.array([True, False]),
                 "names": np.array(["ab", "c"]), "empty": np.zeros((0,)), "best": np.float64(0.25)},
        "state_dict": small_state_dict(),
        "message_hub": {"log_scalars": {"train/loss": hb([0.5, 0.25])},
                        "runtime_info": {"eta": np.float64(1.5), "best_score": np.float32(4.0)}},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
    }


def assert_same_tensors(got: dict, expected: dict, ordered: bool = True) -> None:
    assert list(got) == list(expected) if ordered else sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


# --- official fixture -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def official(parity_fixture: Path):
    return read_checkpoint(parity_fixture / "checkpoint.pth")


def test_official_checkpoint_loads(official, parity_fixture: Path):
    assert official.kind == "mmengine" and official.path == str(parity_fixture / "checkpoint.pth")
    assert len(official.state_dict) == 370
    assert official.meta["dataset_meta"]["classes"] == CLASSES
    assert official.meta["dataset_meta"]["palette"][0] == [255, 0, 0]
    assert official.meta["mmengine_version"] == "0.9.0" and "crop_size" in official.meta["cfg"]
    assert all(type(v) is torch.Tensor and not v.requires_grad for v in official.state_dict.values())


def test_official_tensors_match_trusted_load(official, parity_fixture: Path, fake_mmengine):
    trusted = torch.load(parity_fixture / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert_same_tensors(official.state_dict, dict(trusted["state_dict"]))
    assert isinstance(trusted["message_hub"]["log_scalars"]["train/loss"], fake_mmengine)  # the double was used


# --- formats that load ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("env", [None, *ENV_FLAGS])
@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_mmengine_style_checkpoint(tmp_path, fake_mmengine, monkeypatch, env, zipped):
    ckpt = mmengine_checkpoint(fake_mmengine)
    path = tmp_path / "iter_8.pth"
    torch.save(ckpt, path, _use_new_zipfile_serialization=zipped)
    if env:  # neither variable may break the restricted load or widen it
        monkeypatch.setenv(env, "1")
    contents = read_checkpoint(path)
    assert contents.kind == "mmengine"
    assert_same_tensors(contents.state_dict, ckpt["state_dict"])
    meta = contents.meta
    assert meta["dataset_meta"]["classes"] == CLASSES and meta["seed"] == 42 and type(meta["seed"]) is int
    assert meta["arr"] == [[0, 1, 2], [3, 4, 5]] and meta["flags"] == [True, False]
    assert meta["names"] == ["ab", "c"] and meta["empty"] == [] and meta["best"] == 0.25
    evil = tmp_path / "evil.pth"
    torch.save(Call(os.system, "true"), evil, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError, match="refuses to load posix.system"):
        read_checkpoint(evil)


def test_bare_state_dict_and_wrappers(tmp_path):
    state = small_state_dict()
    for name, obj, kind in (("bare.pth", state, "state_dict"), ("model.pth", {"model": state}, "state_dict"),
                            ("sd.pth", {"state_dict": state, "meta": {"x": 1}}, "mmengine")):
        torch.save(obj, tmp_path / name)
        contents = read_checkpoint(tmp_path / name)
        assert contents.kind == kind, name
        assert_same_tensors(contents.state_dict, state)
    assert read_checkpoint(tmp_path / "sd.pth").meta == {"x": 1}
    assert read_checkpoint(tmp_path / "bare.pth").meta is None


def test_ddp_prefix_stripped_only_when_every_key_has_it(tmp_path):
    state = small_state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    assert list(read_checkpoint(tmp_path / "ddp.pth").state_dict) == list(state)
    torch.save({"module.a": torch.zeros(1), "b": torch.zeros(1)}, tmp_path / "mixed.pth")
    assert list(read_checkpoint(tmp_path / "mixed.pth").state_dict) == ["module.a", "b"]


def test_parameters_become_plain_tensors(tmp_path):
    torch.save({"w": torch.nn.Parameter(torch.ones(2))}, tmp_path / "p.pth")
    value = read_checkpoint(tmp_path / "p.pth").state_dict["w"]
    assert type(value) is torch.Tensor and not value.requires_grad and torch.equal(value, torch.ones(2))


def test_safetensors_round_trip(tmp_path):
    state = {k: v.contiguous() for k, v in small_state_dict().items()}
    save_file(state, tmp_path / "m.safetensors", metadata={"dataset_meta": '{"classes": ["a", "b"]}', "v": "1"})
    contents = read_checkpoint(tmp_path / "m.safetensors")
    assert contents.kind == "safetensors" and contents.meta == {"dataset_meta": {"classes": ["a", "b"]}, "v": "1"}
    assert_same_tensors(contents.state_dict, state, ordered=False)  # safetensors keeps no order
    save_file(state, tmp_path / "weights.bin")  # recognised by content, not by name
    assert read_checkpoint(tmp_path / "weights.bin").meta is None


# --- malicious files: refused, and their payload never runs ---------------------------------------------------

def payloads(marker: Path, hb: type) -> dict[str, object]:
    """Each object, unpickled by a trusted loader, creates ``marker``."""
    touch = f"touch {marker}"
    globals_ = Call(getattr, Call(getattr, hb, "__init__"), "__globals__")
    os_module = Call(Call(getattr, globals_, "__getitem__"), "os")
    via_allowed_name = Call(Call(getattr, Call(getattr, Call(getattr, hb, "min"), "__globals__"), "__getitem__"),
                            "os")
    return {
        "os.system": Call(os.system, touch),
        "eval": Call(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "exec": Call(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "popen": Call(subprocess.Popen, ["touch", str(marker)]),
        "getattr-chain": Call(Call(getattr, os_module, "system"), touch),
        "getattr-allowed-name-chain": Call(Call(getattr, via_allowed_name, "system"), touch),
    }


REFUSALS = {
    "os.system": "refuses to load posix.system",
    "eval": "refuses to load __builtin__.eval",
    "exec": "refuses to load __builtin__.exec",
    "popen": r"refuses to load (subprocess|commands)\.Popen",  # protocol 2 writes the Python 2 name
    "getattr-chain": r"refuses getattr\(HistoryBuffer, '__init__'\)",
    "getattr-allowed-name-chain": r"refuses getattr\(_Inert, '__globals__'\)",
}


def wait_for(path: Path) -> bool:
    for _ in range(200):  # Popen returns before its child has run
        if path.exists():
            return True
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("container", ["zip", "legacy", "pickle"])
@pytest.mark.parametrize("payload", list(REFUSALS))
def test_malicious_files_refused_and_not_run(tmp_path, fake_mmengine, payload, container):
    marker = tmp_path / "pwned"
    obj = {"meta": {}, "state_dict": {"w": torch.zeros(1)}, "message_hub": payloads(marker, fake_mmengine)[payload]}
    path = tmp_path / "evil.pth"
    if container == "pickle":  # a plain pickle: no torch container at all
        path.write_bytes(pickle.dumps(obj["message_hub"], protocol=2))
        trusted = lambda: pickle.loads(path.read_bytes())  # noqa: E731
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=container == "zip")
        trusted = lambda: torch.load(path, weights_only=False)  # noqa: E731
    trusted()  # the control: the file really is live
    assert wait_for(marker), "payload did not run under a trusted loader; the test proves nothing"
    marker.unlink()

    with pytest.raises(CheckpointError, match=REFUSALS[payload]) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and isinstance(info.value, AsanetError)
    assert not wait_for(marker) if payload == "popen" else not marker.exists()


def test_hand_written_opcodes_refused(tmp_path):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}".encode()
    raw = b"\x80\x02cos\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."
    (tmp_path / "raw.pkl").write_bytes(raw)
    with pytest.raises(CheckpointError, match="refuses to load os.system"):
        read_checkpoint(tmp_path / "raw.pkl")
    assert not marker.exists()
    # BUILD with slot state on an allowed callable would rewrite it for every later load.
    build = b"\x80\x02c__builtin__\ngetattr\nN}X\x03\x00\x00\x00_fnNs\x86b."
    (tmp_path / "build.pkl").write_bytes(build)
    with pytest.raises(CheckpointError, match="refuses to set attribute '_fn'"):
        read_checkpoint(tmp_path / "build.pkl")


def test_inert_stand_in_values_cannot_be_called(tmp_path, fake_mmengine):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Call(Call(getattr, fake_mmengine, "min"), [1.0])},
               tmp_path / "call.pth")
    with pytest.raises(CheckpointError, match="not callable"):
        read_checkpoint(tmp_path / "call.pth")


def test_torchscript_archive_refused(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "ok.pth") as src, zipfile.ZipFile(tmp_path / "ts.pt", "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("ok/constants.pkl", pickle.dumps(()))
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_checkpoint(tmp_path / "ts.pt")


def test_tensor_record_must_fit_its_storage():
    storage = torch.storage.TypedStorage(wrap_storage=torch.zeros(4).untyped_storage(), dtype=torch.float32,
                                         _internal=True)
    with pytest.raises(cf._Refused, match="runs past its storage"):
        cf._rebuild_tensor_v2(storage, 1, (4,), (1,))
    assert torch.equal(cf._rebuild_tensor_v2(storage, 0, (2, 2), (2, 1)), torch.zeros(2, 2))


# --- files that are not checkpoints ---------------------------------------------------------------------------

def test_missing_empty_truncated_and_foreign_files(tmp_path, parity_fixture: Path):
    cases = {"missing.pth": (None, "does not exist"), "empty.pth": (b"", "is empty"),
             "notes.txt": (b"just some text\n", "not a checkpoint"),
             "image.png": (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a checkpoint"),
             "bad.safetensors": (b"\x10" + bytes(7) + b"{not json", "cannot be read as safetensors")}
    data = (parity_fixture / "checkpoint.pth").read_bytes()
    cases["half.pth"] = (data[: len(data) // 2], "truncated or corrupt zip")
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message) as info:
            read_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)


def test_pickles_without_tensors_refused(tmp_path):
    for name, obj, message in (("nums.pth", {"epoch": 3}, "contains no tensors"),
                               ("list.pth", [torch.zeros(1)], "holds a list"),
                               ("empty_sd.pth", {"state_dict": {}}, "contains no tensors"),
                               ("odd.pth", {"state_dict": {"a": 1}}, "'a' is a int, not a tensor")):
        torch.save(obj, tmp_path / name)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(tmp_path / name)
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
    with pytest.raises(CheckpointError, match="not one written by torch.save"):
        read_checkpoint(tmp_path / "plain.pkl")
