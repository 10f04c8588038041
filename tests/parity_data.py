"""The official-code parity fixture, stored compactly in tests/data/parity and rebuilt byte for byte.

The official fixture's checkpoint is 17 MB of seeded random weights (make_fixture.py's ``det_init``: one
``torch.manual_seed`` and ``normal_``/``uniform_`` draws in module order) plus 28 head tensors set by a
calibration pass. The compact form keeps the checkpoint file with its tensor bytes cut out (``skeleton``), the 28
calibrated tensors, and the recipe; ``rebuild_checkpoint`` redraws the weights and splices them back, and the
result must hash to the official file's sha256 (recorded in ``layout.json``), so any drift fails loudly.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np

PARITY_DATA = Path(__file__).resolve().parent / "data" / "parity"
INIT_SEED = 1234


def _modules(keys: list[str]) -> list[tuple[str, list[str]]]:
    """State-dict keys grouped by module, in the order the modules own them (``named_modules`` order)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        module, _, leaf = key.rpartition(".")
        groups.setdefault(module, []).append(leaf)
    return list(groups.items())


def draw_weights(shapes: dict[str, tuple[int, ...]], seed: int = INIT_SEED) -> dict:
    """make_fixture.py's ``det_init`` on a state dict of these shapes: the same draws in the same order."""
    import torch

    torch.manual_seed(seed)
    out = {}
    for module, leaves in _modules(list(shapes)):
        def empty(leaf: str):
            return torch.empty(shapes[f"{module}.{leaf}"])

        if "running_mean" in leaves or ("weight" in leaves and len(shapes[f"{module}.weight"]) == 1):
            out[f"{module}.weight"] = 1.0 + 0.1 * torch.randn_like(empty("weight"))  # LayerNorm / BatchNorm
            out[f"{module}.bias"] = empty("bias").normal_(0.0, 0.05)
            if "running_mean" in leaves:
                out[f"{module}.running_mean"] = empty("running_mean").normal_(0.0, 0.1)
                out[f"{module}.running_var"] = empty("running_var").uniform_(0.5, 1.5)
                out[f"{module}.num_batches_tracked"] = torch.tensor(0)
        elif "gamma" in leaves:  # GRN
            out[f"{module}.gamma"] = empty("gamma").normal_(0.0, 0.1)
            out[f"{module}.beta"] = empty("beta").normal_(0.0, 0.1)
        else:  # Conv2d / Linear
            weight = empty("weight")
            out[f"{module}.weight"] = weight.normal_(0.0, 1.0 / math.sqrt(weight[0].numel()))
            if "bias" in leaves:
                out[f"{module}.bias"] = empty("bias").normal_(0.0, 0.05)
    return out


def fixture_state_dict(data: Path = PARITY_DATA) -> dict:
    """The fixture checkpoint's state dict: redrawn weights with the stored calibrated head tensors."""
    import torch

    layout = json.loads((data / "layout.json").read_text())
    shapes = {k: tuple(s) for k, s in layout["shapes"].items()}
    state = draw_weights(shapes, layout["seed"])
    with np.load(data / "calibrated.npz") as calibrated:
        for key in calibrated.files:
            state[key] = torch.from_numpy(calibrated[key].copy())
    return {k: state[k] for k in shapes}


def rebuild_checkpoint(path: Path, data: Path = PARITY_DATA) -> Path:
    """Write the official fixture's checkpoint.pth to ``path``; raise if it is not byte for byte the original."""
    layout = json.loads((data / "layout.json").read_text())
    skeleton = gzip.decompress((data / "checkpoint_skeleton.bin.gz").read_bytes())
    state = fixture_state_dict(data)
    parts, kept, end = [], 0, 0  # kept: skeleton bytes used; end: end of the last tensor in the full file
    for offset, key in layout["tensors"]:  # offsets into the full file, increasing
        parts.append(skeleton[kept:kept + offset - end])
        kept += offset - end
        parts.append(state[key].numpy().tobytes())
        end = offset + len(parts[-1])
    parts.append(skeleton[kept:])
    content = b"".join(parts)
    digest = hashlib.sha256(content).hexdigest()
    if digest != layout["sha256"]:
        raise RuntimeError(f"rebuilt parity checkpoint has sha256 {digest}, the official file {layout['sha256']}: "
                           f"torch's random draws differ from torch {layout['torch']} (see tests/data/parity)")
    path.write_bytes(content)
    return path


def official_keys_tiny(data: Path = PARITY_DATA) -> dict:
    """State-dict keys and shapes of the official ConvNeXt-V2-tiny ASANet (WHU-OPT-SAR, 7 classes)."""
    return json.loads(gzip.decompress((data / "official_keys_tiny.json.gz").read_bytes()))
