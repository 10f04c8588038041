"""Train the small demo ASANet on the labelled TerraMesh tiles and save it as an official mmengine checkpoint.

No official ASANet weights can be downloaded, so the demo ships its own: a tiny custom ConvNeXt-V2 arch trained for
a few minutes on CPU on three 224 x 224 tiles. It is a pipeline demo, not a land-cover product.

    python tools/train_demo.py            # writes demo/asanet_demo.pth and demo/train_log.json

Pre-processing (recorded in the checkpoint's config and in the log):

- optical: TerraMesh ``S2RGB`` (uint8 R, G, B) with the bands reversed to B, G, R, because official checkpoints
  (and therefore the SDK's default metadata) expect the OpenCV order. ``S2RGB`` is contrast-stretched per tile
  (0..2000 reflectance x 1e4 on one tile, 0..10000 on another), so with probability ``L2A_RENDER_PROB`` a training
  sample takes its optical from ``S2L2A`` B04, B03, B02 scaled with the fixed window 0..3000 -> 0..255 instead:
  the model then also fits data scaled like the SDK's ``--optical-scale reflectance:0:3000``.
- SAR: ``S1RTC`` band 1 (VV, dB), ``SAR_DB_WINDOW`` dB -> 0..255 linearly, clipped, not rounded (the SDK's
  ``--sar-scale db:-25:0``), replicated to 3 channels.
- normalisation: per-channel mean / std (0-255 scale) of the training tiles, stored in the config's
  ``data_preprocessor`` so that the SDK's loader picks them up.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from torch import nn

from asanet_rt.export.network import ASANetSegmentor, build_model
from asanet_rt.export.uper_head import ConvModule, resize
from asanet_rt.metadata import ArchSpec
from asanet_rt.metrics import ConfusionMatrix, SegmentationScores

REPO = Path(__file__).resolve().parents[1]
#: The four labelled TerraMesh tiles shipped with the tests (tests/data/NOTICE).
DEFAULT_DATA = REPO / "tests" / "data" / "terramind"

SEED = 20241203
TRAIN_TILES = ("282D_485L_3_3", "38D_378R_2_3", "609U_541L_3_0")
# Jutland: its trees, crops and rangeland all occur in the training tiles; its built area (797 px) does not, so
# those pixels are excluded from its score (and reported separately).
HELDOUT_TILE = "637U_59R_1_3"
#: Esri/Impact Observatory LULC code -> (class name, palette colour as in the Esri legend). Only classes present
#: in the training tiles; every other code (0 no data, 3 flooded vegetation, 5 built area, 8 clouds) -> ignore.
LULC_CLASSES: dict[int, tuple[str, tuple[int, int, int]]] = {
    1: ("water", (65, 155, 223)),
    2: ("trees", (57, 125, 73)),
    4: ("crops", (228, 150, 53)),
    6: ("bare_ground", (165, 155, 143)),
    7: ("snow_ice", (168, 235, 255)),
    9: ("rangeland", (227, 226, 195)),
}
LULC_NAMES = {0: "no data", 3: "flooded vegetation", 5: "built area", 8: "clouds"}
IGNORE = 255
SAR_DB_WINDOW = (-25.0, 0.0)
L2A_WINDOW = (0.0, 3000.0)
L2A_BGR_BANDS = (2, 3, 4)  # 1-based S2L2A band indexes of B02, B03, B04: network order blue, green, red
L2A_RENDER_PROB = 0.5

ARCH = ArchSpec(depths=(1, 1, 2, 1), channels=(16, 32, 64, 128), decoder_channels=48, num_classes=len(LULC_CLASSES))
AUX_CHANNELS = 24
AUX_IN_INDEX = 2
AUX_WEIGHT = 0.4
DROPOUT = 0.1
CROP = 128
BATCH = 8
STEPS = 3000
WARMUP = 150
LR = 2e-3
WEIGHT_DECAY = 0.01
BRIGHTNESS = 0.15  # optical gain 1 +- 0.15 and offset +- 0.15 * 64 on the 0-255 scale
SAR_OFFSET = 6.0   # +- 6 on the 0-255 scale, about +- 0.6 dB


# --- data --------------------------------------------------------------------------------------------------------

def sar_to_255(vv_db: np.ndarray) -> np.ndarray:
    """VV dB -> 0..255 float32 through ``SAR_DB_WINDOW`` (same formula as the SDK's ``db:-25:0``)."""
    low, high = SAR_DB_WINDOW
    return np.clip((vv_db.astype(np.float32) - low) * (255.0 / (high - low)), 0.0, 255.0)


def l2a_to_255(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance x 1e4 -> 0..255 float32 through ``L2A_WINDOW``."""
    low, high = L2A_WINDOW
    return np.clip((reflectance.astype(np.float32) - low) * (255.0 / (high - low)), 0.0, 255.0)


def remap_lulc(lulc: np.ndarray) -> np.ndarray:
    """LULC codes -> class indexes 0..K-1, everything else -> ``IGNORE``."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for index, code in enumerate(LULC_CLASSES):
        lut[code] = index
    return lut[lulc]


def load_tile(data: Path, tile: str) -> dict[str, np.ndarray]:
    """One tile: both optical renderings (3, H, W) in network order B, G, R, SAR (H, W), labels, raw LULC."""
    with rasterio.open(data / "S2RGB" / f"{tile}.tif") as ds:
        rgb = ds.read()  # R, G, B
    with rasterio.open(data / "S2L2A" / f"{tile}.tif") as ds:
        l2a = ds.read(list(L2A_BGR_BANDS))
    with rasterio.open(data / "S1RTC" / f"{tile}.tif") as ds:
        vv = ds.read(1)
    with rasterio.open(data / "LULC" / f"{tile}.tif") as ds:
        lulc = ds.read(1)
    return {
        "s2rgb": rgb[::-1].astype(np.float32),  # R, G, B -> B, G, R (the official OpenCV order)
        "l2a": l2a_to_255(l2a),
        "sar": sar_to_255(vv),
        "label": remap_lulc(lulc),
        "lulc": lulc,
    }


def channel_stats(tiles: list[dict[str, np.ndarray]]) -> tuple[list[float], list[float]]:
    """Mean / std per network channel (0-255) over the training pixels; optical pools both renderings equally,
    because training draws them with equal probability."""
    opt = np.concatenate([np.concatenate([t["s2rgb"], t["l2a"]], axis=2).reshape(3, -1) for t in tiles], axis=1)
    sar = np.concatenate([t["sar"].ravel() for t in tiles])
    mean = [float(v) for v in opt.astype(np.float64).mean(axis=1)] + [float(sar.mean(dtype=np.float64))] * 3
    std = [float(v) for v in opt.astype(np.float64).std(axis=1)] + [float(sar.astype(np.float64).std())] * 3
    return [round(v, 3) for v in mean], [round(v, 3) for v in std]


def sample_batch(tiles: list[dict[str, np.ndarray]], rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``BATCH`` augmented crops: random tile, rendering, crop, flip, 90-degree rotation, radiometric jitter."""
    opts, sars, labels = [], [], []
    for _ in range(BATCH):
        t = tiles[rng.integers(len(tiles))]
        opt = t["l2a"] if rng.random() < L2A_RENDER_PROB else t["s2rgb"]
        h, w = t["label"].shape
        y, x = rng.integers(h - CROP + 1), rng.integers(w - CROP + 1)
        o = opt[:, y:y + CROP, x:x + CROP]
        s = t["sar"][y:y + CROP, x:x + CROP]
        lab = t["label"][y:y + CROP, x:x + CROP]
        if rng.random() < 0.5:
            o, s, lab = o[:, :, ::-1], s[:, ::-1], lab[:, ::-1]
        if rng.random() < 0.5:
            o, s, lab = o[:, ::-1], s[::-1], lab[::-1]
        k = int(rng.integers(4))
        o, s, lab = np.rot90(o, k, axes=(1, 2)), np.rot90(s, k), np.rot90(lab, k)
        gain = 1.0 + rng.uniform(-BRIGHTNESS, BRIGHTNESS)
        offset = rng.uniform(-BRIGHTNESS, BRIGHTNESS) * 64.0
        opts.append(np.clip(o * gain + offset, 0.0, 255.0))
        sars.append(np.clip(s + rng.uniform(-SAR_OFFSET, SAR_OFFSET), 0.0, 255.0))
        labels.append(lab)
    return (np.ascontiguousarray(np.stack(opts), dtype=np.float32),
            np.ascontiguousarray(np.stack(sars)[:, None], dtype=np.float32),
            np.ascontiguousarray(np.stack(labels)).astype(np.int64))


def normalise(opt: np.ndarray, sar: np.ndarray, mean: list[float], std: list[float]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) optical and (N, 1, H, W) SAR on 0-255 -> normalised tensors, SAR replicated to 3 channels."""
    m, s = torch.tensor(mean).view(1, 6, 1, 1), torch.tensor(std).view(1, 6, 1, 1)
    o = (torch.from_numpy(opt) - m[:, :3]) / s[:, :3]
    r = (torch.from_numpy(sar).expand(-1, 3, -1, -1) - m[:, 3:]) / s[:, 3:]
    return o, r


# --- model -------------------------------------------------------------------------------------------------------

class FCNHead(nn.Module):
    """mmseg ``FCNHead`` (num_convs 1, kernel 3, concat_input False): the official training-only auxiliary head."""

    def __init__(self, in_channels: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(F.dropout2d(self.convs(x), DROPOUT, self.training))


class TrainingSegmentor(nn.Module):
    """The SDK's network plus the auxiliary head, under the official module names (so ``state_dict()`` yields
    the official keys ``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``)."""

    def __init__(self, net: ASANetSegmentor) -> None:
        super().__init__()
        self.backbone = net.backbone
        self.decode_head = net.decode_head
        self.auxiliary_head = FCNHead(ARCH.channels[AUX_IN_INDEX], AUX_CHANNELS, ARCH.num_classes)
        # mmseg applies Dropout2d(0.1) before conv_seg while training; our inference head has no dropout module.
        self.decode_head.conv_seg.register_forward_pre_hook(
            lambda mod, args: (F.dropout2d(args[0], DROPOUT, mod.training),))

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(opt, sar)
        size = opt.shape[2:]
        return resize(self.decode_head(feats), size), resize(self.auxiliary_head(feats[AUX_IN_INDEX]), size)


def lr_factor(step: int) -> float:
    """Linear warm-up, then mmseg's PolyLR (power 1) to zero."""
    if step < WARMUP:
        return (step + 1) / WARMUP
    return 1.0 - (step - WARMUP) / (STEPS - WARMUP)


@torch.no_grad()
def predict(net: ASANetSegmentor, opt: np.ndarray, sar: np.ndarray, mean: list[float], std: list[float]
            ) -> np.ndarray:
    """Whole-tile prediction (the official ``mode='whole'``): class index map (H, W)."""
    o, s = normalise(opt[None], sar[None, None], mean, std)
    return net.eval()(o, s)[0].argmax(0).numpy()


def scores(net: ASANetSegmentor, tiles: list[dict[str, np.ndarray]], rendering: str, mean: list[float],
           std: list[float]) -> SegmentationScores:
    """mmseg-style IoU over the given tiles (intersections and unions summed before dividing)."""
    cm = ConfusionMatrix(ARCH.num_classes, IGNORE)
    for t in tiles:
        cm.update(predict(net, t[rendering], t["sar"], mean, std), t["label"])
    return cm.result(class_names())


def class_names() -> tuple[str, ...]:
    return tuple(name for name, _ in LULC_CLASSES.values())


def iou_dict(result: SegmentationScores) -> dict:
    """Per-class IoU (None where the class is neither present nor predicted) and mIoU."""
    d = result.to_dict()
    return {"per_class_IoU": {k: v["IoU"] for k, v in d["per_class"].items()}, "mIoU": d["mIoU"],
            "overall_accuracy": d["overall_accuracy"], "confusion_matrix": d["confusion_matrix"]}


# --- checkpoint --------------------------------------------------------------------------------------------------

def config_text(mean: list[float], std: list[float]) -> str:
    """An mmengine-style config (Python source, as ``Config.pretty_text`` writes it) describing the demo run."""
    def seq(values: list | tuple) -> str:
        return "[" + ", ".join(repr(v) for v in values) + "]"

    preproc = (f"dict(\n    type='RGBXDataPreProcessor',\n    mean={seq(mean)},\n    std={seq(std)},\n"
               f"    bgr_to_rgb=False,\n    pad_val=0,\n    seg_pad_val=255,\n    size=crop_size)")
    return f"""\
crop_size = ({CROP}, {CROP})
dataset_type = 'TerraMeshLULCDemoDataset'
data_root = 'shared/data/terramind'
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = {preproc}
model = dict(
    type='EarlyFusionSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ASANet',
        backbone=dict(
            type='mmpretrain.ConvNeXt',
            arch=dict(depths={seq(ARCH.depths)}, channels={seq(ARCH.channels)}),
            out_indices=[0, 1, 2, 3],
            drop_path_rate=0.0,
            layer_scale_init_value=0.0,
            gap_before_final_norm=False,
            use_grn=True,
            init_cfg=None),
        frm_cfg=dict(type='SFM'),
        ffm_cfg=dict(type='CFM')),
    decode_head=dict(
        type='UPerHead',
        in_channels={seq(ARCH.channels)},
        in_index=[0, 1, 2, 3],
        pool_scales={tuple(ARCH.pool_scales)!r},
        channels={ARCH.decoder_channels},
        dropout_ratio={DROPOUT},
        num_classes={ARCH.num_classes},
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels={ARCH.channels[AUX_IN_INDEX]},
        in_index={AUX_IN_INDEX},
        channels={AUX_CHANNELS},
        num_convs=1,
        concat_input=False,
        dropout_ratio={DROPOUT},
        num_classes={ARCH.num_classes},
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight={AUX_WEIGHT},
                         avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
train_tiles = {seq(TRAIN_TILES)}
heldout_tiles = [{HELDOUT_TILE!r}]
optical_source = dict(
    bands='S2RGB R,G,B reversed to B,G,R; or, with probability {L2A_RENDER_PROB}, S2L2A B02,B03,B04',
    l2a_window={L2A_WINDOW!r})
sar_source = dict(band='S1RTC band 1 (VV, dB)', db_window={SAR_DB_WINDOW!r}, replicate=3)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr={LR}, betas=(0.9, 0.999), weight_decay={WEIGHT_DECAY}))
param_scheduler = [
    dict(type='LinearLR', start_factor={1 / WARMUP!r}, by_epoch=False, begin=0, end={WARMUP}),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin={WARMUP}, end={STEPS}),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={STEPS})
train_dataloader = dict(batch_size={BATCH})
randomness = dict(seed={SEED}, deterministic=True)
default_scope = 'mmseg'
"""


def save_checkpoint(path: Path, model: TrainingSegmentor, mean: list[float], std: list[float],
                    runtime: dict) -> None:
    """Write ``{meta, state_dict, message_hub}`` as mmengine 0.9's CheckpointHook does (weights on CPU, fp32)."""
    state = model.state_dict()  # an OrderedDict carrying ``_metadata``, like mmengine's weights_to_cpu output
    for key, value in state.items():
        state[key] = value.detach().clone().cpu()
    dataset_meta = {"classes": class_names(), "palette": [list(c) for _, c in LULC_CLASSES.values()],
                    "label_map": None, "reduce_zero_label": False}
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
    checkpoint = {
        "meta": {"epoch": 0, "iter": STEPS, "cfg": config_text(mean, std), "seed": SEED,
                 "experiment_name": f"asanet_demo_terramesh_{stamp}", "time": stamp,
                 "mmengine_version": "0.9.0", "dataset_meta": dataset_meta},
        "state_dict": state,
        # Plain values where mmengine pickles HistoryBuffers: nothing here needs more than the basic types.
        "message_hub": {"log_scalars": {}, "runtime_info": {"iter": STEPS, "max_iters": STEPS, "seed": SEED,
                                                            "dataset_meta": dataset_meta, **runtime},
                        "resumed_keys": {"iter": False, "max_iters": False}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)


# --- main --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    global STEPS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with S2RGB/, S1RTC/, LULC/ TerraMesh tiles (default tests/data/terramind)")
    parser.add_argument("--out", type=Path, default=REPO / "demo", help="where asanet_demo.pth goes")
    parser.add_argument("--steps", type=int, default=STEPS, help="(for quick trials; the demo uses the default)")
    args = parser.parse_args(argv)

    STEPS = args.steps
    # One thread keeps the run reproducible bit for bit and leaves the other core free.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)

    train = [load_tile(args.data, t) for t in TRAIN_TILES]
    heldout = load_tile(args.data, HELDOUT_TILE)
    present = {int(c) for t in train for c in np.unique(t["lulc"])}
    missing = set(LULC_CLASSES) - present
    if missing:
        raise SystemExit(f"classes {sorted(missing)} are not in the training tiles")
    mean, std = channel_stats(train)
    print(f"mean {mean}\nstd  {std}", flush=True)

    net = build_model(ARCH)
    model = TrainingSegmentor(net).train()
    params = sum(p.numel() for p in net.parameters())
    aux_params = sum(p.numel() for p in model.auxiliary_head.parameters())
    print(f"arch {ARCH.summary()}: {params:,} parameters (+{aux_params:,} auxiliary head)", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    losses: list[list[float]] = []
    start = time.perf_counter()
    for step in range(STEPS):
        opt, sar, label = sample_batch(train, rng)
        o, s = normalise(opt, sar, mean, std)
        target = torch.from_numpy(label)
        logits, aux_logits = model(o, s)
        loss_decode = F.cross_entropy(logits, target, ignore_index=IGNORE)
        loss_aux = F.cross_entropy(aux_logits, target, ignore_index=IGNORE)
        loss = loss_decode + AUX_WEIGHT * loss_aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append([round(loss.item(), 5), round(loss_decode.item(), 5), round(loss_aux.item(), 5)])
        if step % 100 == 0 or step == STEPS - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  decode {loss_decode.item():.4f}  "
                  f"{time.perf_counter() - start:6.1f} s", flush=True)
    train_seconds = time.perf_counter() - start

    net.eval()
    evaluation = {}
    for rendering in ("s2rgb", "l2a"):
        evaluation[rendering] = {
            "train_tiles": iou_dict(scores(net, train, rendering, mean, std)),
            "train_per_tile": {name: iou_dict(scores(net, [t], rendering, mean, std))["per_class_IoU"]
                               for name, t in zip(TRAIN_TILES, train)},
            "heldout": iou_dict(scores(net, [heldout], rendering, mean, std)),
        }
    # What the model makes of held-out pixels whose class it never saw (built area, ...): excluded from IoU.
    pred = predict(net, heldout["s2rgb"], heldout["sar"], mean, std)
    unseen = {}
    for code in sorted(set(np.unique(heldout["lulc"]).tolist()) - set(LULC_CLASSES)):
        mask = heldout["lulc"] == code
        counts = np.bincount(pred[mask], minlength=ARCH.num_classes)
        unseen[LULC_NAMES.get(code, str(code))] = {
            "lulc_code": code, "pixels": int(mask.sum()),
            "predicted_as": {n: int(c) for n, c in zip(class_names(), counts) if c}}

    ckpt = args.out / "asanet_demo.pth"
    runtime = {"train_seconds": round(train_seconds, 1), "torch_version": str(torch.__version__)}
    save_checkpoint(ckpt, model, mean, std, runtime)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    log = {
        "seed": SEED,
        "torch_version": str(torch.__version__),
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / STEPS, 4),
        "arch": {"depths": list(ARCH.depths), "channels": list(ARCH.channels),
                 "decoder_channels": ARCH.decoder_channels, "pool_scales": list(ARCH.pool_scales),
                 "num_classes": ARCH.num_classes, "parameters": params, "auxiliary_head_parameters": aux_params},
        "classes": list(class_names()),
        "lulc_codes": list(LULC_CLASSES),
        "train_tiles": list(TRAIN_TILES),
        "heldout_tile": HELDOUT_TILE,
        "preprocessing": {
            "optical_channels": ["blue", "green", "red"],
            "optical_eval": "S2RGB bands reversed (R,G,B -> B,G,R), uint8 values as float",
            "optical_train": f"S2RGB, or with probability {L2A_RENDER_PROB} S2L2A B02,B03,B04 scaled "
                             f"{L2A_WINDOW[0]:g}..{L2A_WINDOW[1]:g} -> 0..255 clipped",
            "sar": f"S1RTC band 1 VV dB, {SAR_DB_WINDOW[0]:g}..{SAR_DB_WINDOW[1]:g} dB -> 0..255 clipped, "
                   f"not rounded, replicated to 3 channels",
            "sar_db_window": list(SAR_DB_WINDOW),
            "l2a_window": list(L2A_WINDOW),
            "mean": mean, "std": std,
        },
        "training": {"steps": STEPS, "batch": BATCH, "crop": CROP, "optimizer": "AdamW", "lr": LR,
                     "weight_decay": WEIGHT_DECAY, "warmup": WARMUP, "schedule": "linear warm-up, poly(1) decay",
                     "loss": f"CE(ignore {IGNORE}) + {AUX_WEIGHT} x auxiliary CE", "dropout": DROPOUT,
                     "augment": f"random {CROP} px crops, h/v flips, 90-degree rotations, optical gain "
                                f"1+-{BRIGHTNESS} and offset +-{BRIGHTNESS * 64:g}, SAR offset +-{SAR_OFFSET:g}"},
        "evaluation": evaluation,
        "heldout_unseen_classes": unseen,
        "checkpoint": {"file": ckpt.name, "bytes": ckpt.stat().st_size, "sha256": digest},
        "loss_columns": ["total", "decode", "auxiliary"],
        "losses": losses,
    }
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    for rendering, ev in evaluation.items():
        for part in ("train_tiles", "heldout"):
            ious = ", ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in ev[part]["per_class_IoU"].items())
            print(f"{rendering:5s} {part:11s} mIoU {ev[part]['mIoU']:.3f}: {ious}")
    print(f"held-out unseen classes: {unseen}")
    print(f"trained {STEPS} steps in {train_seconds:.0f} s; {ckpt} {ckpt.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
