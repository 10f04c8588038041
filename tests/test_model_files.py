"""ONNX files from untrusted sources: external data must stay inside the model's folder, metadata must be sane.

Crafted models point their weights at files outside the folder (``..``, absolute paths, symlinks), at a fifo,
at ONNX Runtime's raw-memory tag; every one is refused by ``check_onnx_file`` and by every entry point that hands
ONNX files to a library, while a model with legitimate external data next to it still runs.
"""
from __future__ import annotations

import re

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from asanet_rt.backends import open_runner
from asanet_rt.metadata import METADATA_KEY
from asanet_rt.model_files import MAX_METADATA_BYTES, ModelFileError, check_onnx_file, read_metadata_text
from asanet_rt.onnx_info import read_onnx_info

from runtime_helpers import toy_model  # noqa: F401 - fixture
from toy_models import toy_reference

# the outside file a hostile model wants read into its weights
SECRET = np.arange(1, 65, dtype=np.float32)


def _externalise(model: onnx.ModelProto, tensor: TensorProto, location: str, offset: int = 0) -> None:
    """Mark ``tensor`` as stored at ``location`` (no file is written)."""
    set_external_data(tensor, location, offset=offset, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL


def _weights_elsewhere(toy: Path, folder: Path, location: str, name: str = "model.onnx") -> Path:
    """A copy of the toy model in ``folder`` whose conv weight ``w`` is stored at ``location``."""
    model = onnx.load(str(toy))
    w = next(t for t in model.graph.initializer if t.name == "w")
    w.CopyFrom(numpy_helper.from_array(SECRET[:numpy_helper.to_array(w).size].reshape(w.dims), "w"))
    _externalise(model, w, location)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save(model, str(path))
    return path


@pytest.fixture
def layout(tmp_path: Path, toy_model: Path) -> dict[str, Path]:
    """tmp/outside/secret.bin (the target) and tmp/models/m/ (the model folder)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    SECRET.tofile(outside / "secret.bin")
    return {"toy": toy_model, "secret": outside / "secret.bin", "folder": tmp_path / "models" / "m"}


def _refused(path: Path, pattern: str) -> str:
    """Assert every entry point refuses ``path`` with a one-line message matching ``pattern``; return it."""
    with pytest.raises(ModelFileError, match=pattern) as caught:
        check_onnx_file(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for entry in (open_runner, read_onnx_info):
        with pytest.raises(ModelFileError, match=pattern):
            entry(path)
    return message


def test_dotdot_location_is_refused(layout):
    path = _weights_elsewhere(layout["toy"], layout["folder"], "../../outside/secret.bin")
    message = _refused(path, r"model\.onnx: external data of tensor 'w' points at '\.\./\.\./outside/secret\.bin'")
    assert "outside the model's folder" in message


def test_dotdot_inside_a_subfolder_is_refused(layout):
    path = _weights_elsewhere(layout["toy"], layout["folder"], "sub/../../../outside/secret.bin")
    _refused(path, r"'\.\.' takes outside the model's folder")


def test_passwd_like_location_is_refused(layout):
    path = _weights_elsewhere(layout["toy"], layout["folder"], "../../../../../../../../etc/passwd")
    _refused(path, r"points at '(\.\./)+etc/passwd'")


@pytest.mark.parametrize("location", ["{secret}", "/etc/passwd", "/dev/zero", "\\\\server\\share\\w.bin",
                                      "C:\\Windows\\w.bin"])
def test_absolute_location_is_refused(layout, location):
    location = location.format(secret=layout["secret"])
    path = _weights_elsewhere(layout["toy"], layout["folder"], location)
    _refused(path, "an absolute path")


def test_symlink_escaping_the_folder_is_refused(layout):
    layout["folder"].mkdir(parents=True)
    (layout["folder"] / "weights.bin").symlink_to(layout["secret"])
    path = _weights_elsewhere(layout["toy"], layout["folder"], "weights.bin")
    _refused(path, r"'weights\.bin', which resolves to .*outside[/\\]secret\.bin outside the model's folder")


def test_symlinked_subfolder_escaping_the_folder_is_refused(layout):
    layout["folder"].mkdir(parents=True)
    (layout["folder"] / "data").symlink_to(layout["secret"].parent, target_is_directory=True)
    path = _weights_elsewhere(layout["toy"], layout["folder"], "data/secret.bin")
    _refused(path, "resolves to .* outside the model's folder")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no fifos on this OS")
def test_fifo_is_refused(layout):
    # TensorRT's ONNX parser opens a fifo and blocks forever; ONNX Runtime and OpenVINO refuse it
    layout["folder"].mkdir(parents=True)
    os.mkfifo(layout["folder"] / "weights.bin")
    path = _weights_elsewhere(layout["toy"], layout["folder"], "weights.bin")
    _refused(path, r"'weights\.bin', which is not a regular file")


def test_directory_and_missing_file_are_refused(layout):
    (layout["folder"] / "sub").mkdir(parents=True)
    _refused(_weights_elsewhere(layout["toy"], layout["folder"], "sub"), "not a regular file")
    _refused(_weights_elsewhere(layout["toy"], layout["folder"], "gone.bin"), r"'gone\.bin', which cannot be read")


def test_onnxruntime_memory_tag_is_refused(layout):
    # OpenVINO 2026.4 reads the offset of this tag as a memory address even from a file (it segfaults)
    path = _weights_elsewhere(layout["toy"], layout["folder"], "*/_ORT_MEM_ADDR_/*")
    _refused(path, "a raw memory address")


def test_data_past_the_end_of_the_weight_file_is_refused(layout):
    layout["folder"].mkdir(parents=True)
    SECRET[:4].tofile(layout["folder"] / "short.bin")
    path = _weights_elsewhere(layout["toy"], layout["folder"], "short.bin")
    _refused(path, r"reads bytes 0\.\.\d+ of 'short\.bin', which has only 16")


def test_malformed_offsets_and_repeated_keys_are_refused(layout):
    folder = layout["folder"]
    folder.mkdir(parents=True)
    SECRET.tofile(folder / "w.bin")
    path = _weights_elsewhere(layout["toy"], folder, "w.bin")
    model = onnx.load(str(path), load_external_data=False)
    w = next(t for t in model.graph.initializer if t.name == "w")
    offset = next(e for e in w.external_data if e.key == "offset")
    offset.value = "-4"
    onnx.save(model, str(path))
    _refused(path, r"has offset '-4', not a non-negative integer")
    offset.value = "0"
    w.external_data.add(key="location", value="../../outside/secret.bin")
    onnx.save(model, str(path))
    _refused(path, "names its location 2 times")


def test_legitimate_external_data_loads_and_runs(toy_model, tmp_path):
    """All weights in files next to the model (one in a subfolder, one through an in-folder symlink) still run."""
    model = onnx.load(str(toy_model))
    folder = tmp_path / "model"
    (folder / "data").mkdir(parents=True)
    offset = 0
    with open(folder / "weights.bin", "wb") as blob:
        for tensor in model.graph.initializer:
            if tensor.name in ("w", "b"):
                size = blob.write(tensor.raw_data)
                _externalise(model, tensor, "weights.bin", offset)
                offset += size
    box = next(t for t in model.graph.initializer if t.name == "box")
    (folder / "data" / "box.bin").write_bytes(box.raw_data)
    _externalise(model, box, "data/box.bin")
    mean = next(t for t in model.graph.initializer if t.name == "mean")
    (folder / "data" / "mean.bin").write_bytes(mean.raw_data)
    (folder / "mean_link.bin").symlink_to(Path("data") / "mean.bin")
    _externalise(model, mean, "mean_link.bin")
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    assert path.stat().st_size < toy_model.stat().st_size  # the weights really live outside the .onnx

    check_onnx_file(path)
    assert read_onnx_info(path).metadata is not None
    rng = np.random.default_rng(0)
    optical = rng.uniform(0, 255, (1, 3, 32, 32)).astype(np.float32)
    sar = rng.uniform(0, 255, (1, 1, 32, 32)).astype(np.float32)
    with open_runner(path) as runner:
        logits = runner.infer({"optical": optical, "sar": sar})["logits"]
    np.testing.assert_allclose(logits, toy_reference(optical, sar), rtol=1e-4, atol=1e-4)


# -- every place a tensor can hide ----------------------------------------------------------------------------
def _tensor(location: str) -> TensorProto:
    t = numpy_helper.from_array(SECRET[:4], "hidden")
    _externalise(onnx.ModelProto(), t, location)
    return t


def _graph(nodes=(), initializer=(), sparse=()) -> onnx.GraphProto:
    g = helper.make_graph(list(nodes), "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                          list(initializer))
    g.sparse_initializer.extend(sparse)
    return g


def _constant(location: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], ["y"], value=_tensor(location))


def _hiding_places(location: str) -> dict[str, onnx.ModelProto]:
    sparse = onnx.SparseTensorProto(values=_tensor(location), indices=numpy_helper.from_array(np.array([0]), "i"))
    sparse.dims.extend([4])
    nested = _graph([_constant(location)])
    for _ in range(5):  # an If inside an If ... five levels down
        nested = _graph([helper.make_node("If", ["c"], ["y"], then_branch=nested, else_branch=_graph())])
    function = helper.make_function("local", "f", [], ["y"], [_constant(location)],
                                    [helper.make_opsetid("", 17)])
    training = onnx.TrainingInfoProto(initialization=_graph(initializer=[_tensor(location)]))
    graphs = {
        "initializer": _graph(initializer=[_tensor(location)]),
        "constant_node": _graph([_constant(location)]),
        "sparse_initializer": _graph(sparse=[sparse]),
        "sparse_attribute": _graph([helper.make_node("Constant", [], ["y"], sparse_value=sparse)]),
        "tensors_attribute": _graph([helper.make_node("X", [], ["y"], domain="d", ts=[_tensor(location)])]),
        "loop_body": _graph([helper.make_node("Loop", ["n", "c"], ["y"], body=_graph([_constant(location)]))]),
        "scan_graphs": _graph([helper.make_node("X", [], ["y"], domain="d", gs=[_graph(), nested])]),
        "nested_if": nested,
    }
    models = {name: helper.make_model(g) for name, g in graphs.items()}
    models["function"] = helper.make_model(_graph(), functions=[function])
    models["training_info"] = helper.make_model(_graph())
    models["training_info"].training_info.append(training)
    return models


@pytest.mark.parametrize("place", list(_hiding_places("x")))
def test_external_data_is_found_wherever_a_tensor_hides(tmp_path, place):
    path = tmp_path / f"{place}.onnx"
    path.write_bytes(_hiding_places("../outside.bin")[place].SerializeToString())
    with pytest.raises(ModelFileError, match=r"tensor 'hidden' points at '\.\./outside\.bin'"):
        check_onnx_file(path)
    (tmp_path / "inside.bin").write_bytes(SECRET.tobytes())
    path.write_bytes(_hiding_places("inside.bin")[place].SerializeToString())
    check_onnx_file(path)  # the same place with a legitimate location passes


# -- metadata and malformed files ------------------------------------------------------------------------------
def test_oversized_metadata_is_refused_before_json_parsing(toy_model, tmp_path):
    model = onnx.load(str(toy_model))
    prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    prop.value = prop.value + " " * (MAX_METADATA_BYTES - len(prop.value.encode()))  # exactly at the limit: fine
    at_limit = tmp_path / "at_limit.onnx"
    onnx.save(model, str(at_limit))
    check_onnx_file(at_limit)
    prop.value = "[" * (MAX_METADATA_BYTES + 1)  # would also be a JSON nesting bomb
    big = tmp_path / "big.onnx"
    onnx.save(model, str(big))
    _refused(big, r"big\.onnx: its asanet_rt\.metadata metadata is 1048577 bytes, over the 1048576 byte limit")
    helper.set_model_props(model, {"other": "x" * (MAX_METADATA_BYTES + 1)})  # not ours: left to the readers
    onnx.save(model, str(big))
    check_onnx_file(big)


def test_metadata_is_read_without_parsing_the_graph(toy_model, tmp_path):
    model = onnx.load(str(toy_model))
    expected = next(p.value for p in model.metadata_props if p.key == METADATA_KEY)
    assert read_metadata_text(toy_model) == expected
    prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    prop.value = "[" * (MAX_METADATA_BYTES + 1)
    big = tmp_path / "big.onnx"
    onnx.save(model, str(big))
    with pytest.raises(ModelFileError, match=r"big\.onnx: its asanet_rt\.metadata metadata is 1048577 bytes"):
        read_metadata_text(big)
    helper.set_model_props(model, {"other": "x"})
    onnx.save(model, str(big))
    assert read_metadata_text(big) is None
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFileError, match=r"junk\.onnx: not a loadable ONNX model"):
        read_metadata_text(tmp_path / "junk.onnx")


def _nesting_bomb(levels: int) -> bytes:
    """model.graph = node{attribute{g = graph{node{...}}}} ``levels`` subgraphs deep, encoded by hand."""
    def field(number: int, payload: bytes) -> bytes:
        size, out = len(payload), bytearray()
        out.append(number << 3 | 2)
        while True:
            byte, size = size & 0x7F, size >> 7
            out.append(byte | (0x80 if size else 0))
            if not size:
                return bytes(out) + payload
    graph = b""
    for _ in range(levels):
        graph = field(1, field(5, field(6, graph)))  # graph.node.attribute.g
    return field(7, graph)


@pytest.mark.parametrize("content, pattern", [
    (b"not a model", "wire type 6"),
    (b"\x3a\xff\xff\xff\x0f", "runs past its message"),         # graph field claiming 4 GiB
    (b"\x3a\x02\x0a", "runs past its message"),                 # graph cut short
    (b"\x08" + b"\xff" * 11, "truncated or overlong varint"),
    (b"\x00\x00", "field number 0"),
    (_nesting_bomb(200), "nested deeper than"),
])
def test_malformed_files_are_refused_with_one_line(tmp_path, content, pattern):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    expected = rf"bad\.onnx: not a loadable ONNX model \(malformed protobuf: .*{pattern}"
    with pytest.raises(ModelFileError, match=expected):
        check_onnx_file(path)


def test_nesting_within_the_limit_passes(tmp_path):
    path = tmp_path / "deep.onnx"
    path.write_bytes(_nesting_bomb(30))
    check_onnx_file(path)


def test_truncated_real_model_and_empty_file_are_refused(toy_model, tmp_path):
    data = toy_model.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.onnx: not a loadable ONNX model"):
        check_onnx_file(cut)
    empty = tmp_path / "empty.onnx"
    empty.touch()
    with pytest.raises(ModelFileError, match=r"empty\.onnx: empty file"):
        check_onnx_file(empty)


def test_real_exports_pass(toy_model):
    check_onnx_file(toy_model)


# -- what the libraries do by themselves (recorded so a change in them shows up) ------------------------------
@pytest.mark.parametrize("location", ["../../outside/secret.bin", "{secret}"])
def test_onnxruntime_itself_refuses_escaping_locations(layout, location):
    """ONNX Runtime >= 1.2x validates external-data paths itself; asanet-rt does not rely on it (other readers
    do not: TensorRT's parser follows symlinks out of the folder, OpenVINO honours the raw-memory tag)."""
    import onnxruntime as ort

    path = _weights_elsewhere(layout["toy"], layout["folder"], location.format(secret=layout["secret"]))
    with pytest.raises(Exception, match="(?i)escapes model directory|absolute path not allowed"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("location", ["../../outside/secret.bin", "{secret}"])
def test_openvino_itself_refuses_escaping_locations(layout, location):
    """OpenVINO (2026.4) refuses these too, but not ONNX Runtime's raw-memory tag (README, Security)."""
    ov = pytest.importorskip("openvino")
    path = _weights_elsewhere(layout["toy"], layout["folder"], location.format(secret=layout["secret"]))
    with pytest.raises(Exception, match="(?i)outside the base directory"):
        ov.Core().read_model(str(path))


def test_check_needs_neither_onnx_nor_protobuf(toy_model, tmp_path):
    """The runtime install has no onnx package: the check must not import it."""
    import subprocess

    code = ("import sys; sys.modules['onnx'] = None; sys.modules['google.protobuf'] = None; "
            "from asanet_rt.model_files import check_onnx_file; check_onnx_file(sys.argv[1]); print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(toy_model)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_every_reader_entry_point_checks_first(layout, tmp_path):
    """The export stage, the engine builder (before TensorRT's parser) and OpenVINO all refuse the escaping file."""
    from asanet_rt.engines import builder
    from asanet_rt.export.onnx_export import read_metadata

    path = _weights_elsewhere(layout["toy"], layout["folder"], "../../outside/secret.bin")
    pattern = r"model\.onnx: external data of tensor 'w' points at '\.\./\.\./outside/secret\.bin'"
    with pytest.raises(ModelFileError, match=pattern):
        read_metadata(path)
    with pytest.raises(ModelFileError, match=pattern):
        builder.build_engine(path, tmp_path / "m.engine")
    with pytest.raises(ModelFileError, match=pattern):  # no TensorRT object is touched before the check
        builder._parse(None, None, None, path, None)
    pytest.importorskip("openvino")
    with pytest.raises(ModelFileError, match=pattern):
        open_runner(path, backend="openvino")
    from asanet_rt.bench import BenchSettings, ModelSpec
    from asanet_rt.bench.measure import bench_model

    # bench opens models through the same registry and records the refusal as the model's error
    record = bench_model(ModelSpec(str(path), "openvino"), BenchSettings(batches=(1,), tiles=(32,)).resolved())
    assert re.search(pattern, record["error"])


def test_non_utf8_strings_are_taken_as_bytes(tmp_path):
    """A non-UTF-8 tensor name is no reason to refuse; a non-UTF-8 location is still checked as a path."""
    model = _hiding_places("../outside.bin")["initializer"]
    raw = model.SerializeToString().replace(b"hidden", b"hid\xffen").replace(b"../outside.bin", b"../outs\xffde.bin")
    path = tmp_path / "bytes.onnx"
    path.write_bytes(raw)
    with pytest.raises(ModelFileError, match=r"tensor 'hid\\udcffen' points at '\.\./outs\\udcffde\.bin'"):
        check_onnx_file(path)
