"""Make tests/data/parity from the official parity fixture (a folder made by the official code's make_fixture.py).

    python tests/data/parity/make_compact.py PATH/TO/parity_fixture [PATH/TO/official_keys_tiny.json]

Keeps: inputs.npz as is; of outputs.npz the logits, decode logits, fused features, argmax and the stage-3 streams
of case a; the checkpoint as a skeleton (the file with its tensor bytes cut out) + the 28 calibrated head tensors,
rebuilt by tests/parity_data.py from the seeded recipe and checked against the original's sha256.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(OUT.parents[1]))
from parity_data import INIT_SEED, draw_weights, rebuild_checkpoint  # noqa: E402

KEPT_STAGE = 3  # the deepest stage: its streams carry every earlier stage's error


def main(fixture: Path, keys_json: Path | None) -> None:
    import torch

    from asanet_rt.export.checkpoint_file import read_checkpoint

    ckpt = fixture / "checkpoint.pth"
    raw = ckpt.read_bytes()
    state = read_checkpoint(ckpt).state_dict
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    drawn = draw_weights(shapes, INIT_SEED)
    calibrated = {k: v.numpy() for k, v in state.items() if not torch.equal(v, drawn[k])}
    np.savez_compressed(OUT / "calibrated.npz", **calibrated)

    tensors = []  # (offset in the file, state-dict key); torch writes storage n for the n-th tensor
    with zipfile.ZipFile(ckpt) as z:
        for n, key in enumerate(state):
            info = z.getinfo(f"checkpoint.pth/data/{n}")
            header = raw[info.header_offset:info.header_offset + 30]
            start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(
                header[28:30], "little")
            assert info.compress_type == zipfile.ZIP_STORED and raw[start:start + info.file_size] == \
                state[key].numpy().tobytes(), key
            tensors.append((start, key))
    tensors.sort()
    skeleton, end = [], 0
    for start, key in tensors:
        skeleton.append(raw[end:start])
        end = start + state[key].numpy().nbytes
    skeleton.append(raw[end:])
    (OUT / "checkpoint_skeleton.bin.gz").write_bytes(gzip.compress(b"".join(skeleton), 9, mtime=0))
    layout = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw), "seed": INIT_SEED,
              "torch": torch.__version__, "shapes": {k: list(s) for k, s in shapes.items()},
              "tensors": [[s, k] for s, k in tensors]}
    (OUT / "layout.json").write_text(json.dumps(layout, separators=(",", ":")) + "\n")

    shutil.copyfile(fixture / "inputs.npz", OUT / "inputs.npz")
    with np.load(fixture / "outputs.npz") as outputs:
        kept = {k: outputs[k] for k in outputs.files
                if "_stage" not in k or k.startswith(f"a_stage{KEPT_STAGE}_")}
    kept = {k: v.astype(np.uint8) if k.endswith("_argmax") else v for k, v in kept.items()}  # 5 classes
    np.savez_compressed(OUT / "outputs.npz", **kept)
    if keys_json:
        keys = json.loads(keys_json.read_text())
        (OUT / "official_keys_tiny.json.gz").write_bytes(
            gzip.compress(json.dumps(keys, separators=(",", ":")).encode(), 9, mtime=0))

    rebuilt = rebuild_checkpoint(OUT / "rebuilt.pth", OUT)
    assert rebuilt.read_bytes() == raw
    rebuilt.unlink()
    print(f"{len(calibrated)} calibrated tensors; rebuilt checkpoint is byte for byte the official one")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
