"""The user-facing model: ``Classifier.open(path)`` then ``predict`` on arrays or ``classify_scene`` on GeoTIFFs."""
from __future__ import annotations

import os
import threading
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import Runner, open_runner
from .errors import AsanetError
from .metadata import ModelMetadata
from .tiling import MULTIPLE, TileGrid, pad_reflect, round_up


class TileSizeWarning(UserWarning):
    """Tiles of another size than the model's native tile (accuracy may differ from the trained setting)."""

if TYPE_CHECKING:  # imported lazily at run time: predict() needs no rasterio
    from .scene_pipeline import SceneSummary

#: Output names in the order of preference for blending: probabilities blend directly, logits via softmax.
SCORE_OUTPUTS = ("probabilities", "logits", "classes")


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32 (in place on a float32 copy)."""
    x = np.array(logits, dtype=np.float32, copy=True)
    x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


class Classifier:
    """An ASANet model behind any backend, fed raw pixel values (0-255 scale) in the model's band order.

    Thread-safety: one Classifier owns one runner, and every inference call holds an internal lock, so a
    Classifier may be shared between threads (calls are serialised). For parallel inference open one Classifier
    per thread (each has its own session or engine context).
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.metadata: ModelMetadata = runner.metadata
        export = dict(self.metadata.export or {})
        if not export:
            raise AsanetError(f"{runner.path}: the model's metadata has no export section (tile and batch "
                              f"ranges, outputs); export it with `asanet-rt export`")
        self.path = runner.path
        self.input_kind = str(export.get("input", "raw"))
        #: names of the optical input's channels, in the order the model takes them
        self.optical_bands: tuple[str, ...] = tuple(export.get("optical_bands") or self.metadata.optical_channels)
        self.tile_range: tuple[int, int] = tuple(int(v) for v in export.get("tile", (MULTIPLE, 4096)))
        self.batch_range: tuple[int, int] = tuple(int(v) for v in export.get("batch", (1, 1)))
        outputs = tuple(runner.output_names)
        self.score_output = next((name for name in SCORE_OUTPUTS if name in outputs), None)
        if self.score_output is None:
            raise AsanetError(f"{runner.path}: model outputs {', '.join(outputs)}; the runtime needs one of "
                              f"{', '.join(SCORE_OUTPUTS)}")
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | os.PathLike, backend: str = "auto", device: int = 0, **options: Any) -> "Classifier":
        """Open an ``.onnx`` model or a TensorRT engine; ``options`` go to the backend's runner."""
        runner = open_runner(path, backend=backend, device=device, **options)
        try:
            return cls(runner)
        except BaseException:
            runner.close()
            raise

    # -- what the model expects ------------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return self.metadata.classes

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.metadata.palette

    @property
    def num_classes(self) -> int:
        return self.metadata.num_classes

    @property
    def default_tile(self) -> int:
        """The model's native tile, clipped to its exported range (a multiple of 32)."""
        lo, hi = self.tile_range
        return min(max(round_up(self.metadata.native_tile), lo), hi)

    @property
    def on_cpu(self) -> bool:
        """Whether the model runs on the CPU (ONNX Runtime's CPU execution provider)."""
        providers = tuple(getattr(self.runner, "providers", ()))
        return self.runner.backend == "onnxruntime" and providers[:1] == ("CPUExecutionProvider",)

    @property
    def default_batch(self) -> int:
        """Tiles per inference call unless asked otherwise, within the exported range.

        On a CPU batching does not speed up convolutions (each op is already parallel over a 512 px tile) but
        multiplies the activation memory, so the smallest batch; on a GPU up to 8 to keep the device busy.
        """
        lo, hi = self.batch_range
        return max(lo, min(hi, 1 if self.on_cpu else 8))

    def optical_fill(self) -> tuple[float, float, float]:
        """The training mean of each optical input band (in ``optical_bands`` order), used for nodata pixels."""
        means = dict(zip(self.metadata.optical_channels, self.metadata.optical_mean))
        default = float(np.mean(self.metadata.optical_mean))
        return tuple(float(means.get(name, default)) for name in self.optical_bands)  # type: ignore[return-value]

    def sar_fill(self) -> float:
        return float(self.metadata.sar_mean[0])

    # -- inference -------------------------------------------------------------------------------------------
    def _feed(self, optical: np.ndarray, sar: np.ndarray) -> dict[str, np.ndarray]:
        """The model's inputs: raw values as is, or normalised here for a ``--input normalized`` export."""
        if self.input_kind != "normalized":
            return {"optical": optical, "sar": sar}
        meta = self.metadata
        perm = [self.optical_bands.index(name) for name in meta.optical_channels]
        mean = np.asarray(meta.optical_mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(meta.optical_std, np.float32).reshape(1, 3, 1, 1)
        s_mean = np.asarray(meta.sar_mean, np.float32).reshape(1, -1, 1, 1)
        s_std = np.asarray(meta.sar_std, np.float32).reshape(1, -1, 1, 1)
        sar3 = np.repeat(sar.astype(np.float32), meta.sar_replicate, axis=1)
        return {"optical": (optical[:, perm].astype(np.float32) - mean) / std, "sar": (sar3 - s_mean) / s_std}

    def scores(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        """Per-class scores (N, K, H, W) float32 that blend linearly, for tiles of a size the model accepts.

        Probabilities when the model gives them or logits (softmax here); for a classes-only model, a one-hot
        vote weighted by its confidence output (1 without one).
        """
        n = optical.shape[0]
        lo, hi = self.batch_range
        parts = []
        for start in range(0, n, hi):
            opt, sar_ = optical[start:start + hi], sar[start:start + hi]
            m = opt.shape[0]
            if m < lo:  # a fixed-batch engine: pad with copies of the last tile
                opt = np.concatenate([opt, np.repeat(opt[-1:], lo - m, axis=0)])
                sar_ = np.concatenate([sar_, np.repeat(sar_[-1:], lo - m, axis=0)])
            feed = self._feed(opt, sar_)
            with self._lock:
                out = self.runner.infer(feed)
            parts.append(self._to_scores(out)[:m])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _to_scores(self, out: dict[str, np.ndarray]) -> np.ndarray:
        if self.score_output == "probabilities":
            return np.asarray(out["probabilities"], dtype=np.float32)
        if self.score_output == "logits":
            return softmax(out["logits"], axis=1)
        classes = np.asarray(out["classes"]).astype(np.intp)
        n, h, w = classes.shape
        votes = np.zeros((n, self.num_classes, h, w), np.float32)
        conf = np.asarray(out["confidence"], np.float32) if "confidence" in out else np.ones((n, h, w), np.float32)
        np.put_along_axis(votes, classes[:, None], conf[:, None], axis=1)
        return votes

    def predict(self, optical: np.ndarray, sar: np.ndarray, return_confidence: bool = False,
                tile: int | None = None, overlap: int | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Classes of raw tiles: ``optical`` (N, 3, H, W) or (3, H, W), ``sar`` (N, 1, H, W), (1, H, W) or (H, W).

        Values are raw pixel values on the model's 0-255 scale (uint8 or float), bands in ``optical_bands`` order.
        Any H, W: padded by reflection to a multiple of 32 (and to the model's minimum tile) and cropped back;
        larger than the model's maximum tile, tiled internally with blended overlaps (``tile``, ``overlap``).
        Returns classes uint8 (N, H, W) (or (H, W) for unbatched input), and confidence float32 of the same shape
        (the blended top-class probability) if ``return_confidence``.
        """
        opt, sar_, batched = self._as_batch(optical, sar)
        scores = self._predict_scores(opt, sar_, tile, overlap)
        classes = scores.argmax(axis=1).astype(np.uint8)
        if not batched:
            classes = classes[0]
        if not return_confidence:
            return classes
        confidence = scores.max(axis=1)
        return classes, (confidence if batched else confidence[0])

    def predict_proba(self, optical: np.ndarray, sar: np.ndarray, tile: int | None = None,
                      overlap: int | None = None) -> np.ndarray:
        """Per-class scores (N, K, H, W) float32 (probabilities for models with logits/probabilities outputs)."""
        opt, sar_, batched = self._as_batch(optical, sar)
        scores = self._predict_scores(opt, sar_, tile, overlap)
        return scores if batched else scores[0]

    def _as_batch(self, optical: np.ndarray, sar: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        optical, sar = np.asarray(optical), np.asarray(sar)
        batched = optical.ndim == 4
        if optical.ndim not in (3, 4) or optical.shape[-3] != 3:
            raise AsanetError(f"optical array of shape {optical.shape}: expected (N, 3, H, W) or (3, H, W)")
        opt = optical if batched else optical[None]
        if sar.ndim == 2:
            sar = sar[None, None]
        elif sar.ndim == 3:
            sar = sar[:, None] if batched and sar.shape[0] == opt.shape[0] and sar.shape[0] != 1 else sar[None]
        if sar.ndim != 4 or sar.shape[1] != 1 or sar.shape[0] != opt.shape[0] or sar.shape[2:] != opt.shape[2:]:
            raise AsanetError(f"SAR array of shape {np.shape(sar)} does not match optical {optical.shape}: expected "
                              f"(N, 1, H, W), (1, H, W) or (H, W) with the optical's N, H, W")
        if opt.shape[0] == 0:
            raise AsanetError("empty batch")
        if min(opt.shape[2:]) < 1:
            raise AsanetError(f"empty input of shape {optical.shape}")
        return opt.astype(np.float32, copy=False), sar.astype(np.float32, copy=False), batched

    def _predict_scores(self, opt: np.ndarray, sar: np.ndarray, tile: int | None,
                        overlap: int | None) -> np.ndarray:
        n, _, h, w = opt.shape
        lo, hi = self.tile_range
        if max(h, w) <= hi:
            ph, pw = max(lo, round_up(h)), max(lo, round_up(w))
            scores = self.scores(pad_reflect(opt, 0, ph - h, 0, pw - w), pad_reflect(sar, 0, ph - h, 0, pw - w))
            return np.ascontiguousarray(scores[:, :, :h, :w])
        tile = self.check_tile(tile)
        overlap = tile // 4 if overlap is None else int(overlap)
        return np.stack([self._tiled_scores(opt[i], sar[i], tile, overlap) for i in range(n)])

    def check_tile(self, tile: int | None) -> int:
        """``tile`` (default: the model's) checked against the model's range; a clear error otherwise."""
        lo, hi = self.tile_range
        native = round_up(self.metadata.native_tile)
        if tile is None:
            tile = self.default_tile
            if tile != native:
                warnings.warn(f"tiling at {tile} px: the model's native tile {native} is outside the tile range "
                              f"{lo}:{hi} it was exported with (re-export with a range that holds {native})",
                              TileSizeWarning, stacklevel=3)
            return tile
        tile = int(tile)
        if tile % MULTIPLE or not lo <= tile <= hi:
            raise AsanetError(f"--tile {tile}: the model takes tiles of {lo} to {hi} px in steps of {MULTIPLE}")
        if tile != native:
            warnings.warn(f"tiling at {tile} px, not at the model's native tile {native} (what it was trained on)",
                          TileSizeWarning, stacklevel=3)
        return tile

    def _tiled_scores(self, opt: np.ndarray, sar: np.ndarray, tile: int, overlap: int) -> np.ndarray:
        """One large image, tiled with overlap and blended (in memory: the image is in memory already)."""
        _, h, w = opt.shape
        grid = TileGrid.plan(h, w, tile, overlap, self.tile_range[0])
        weights = grid.weights()
        by, bx = -min(grid.ys[0], 0), -min(grid.xs[0], 0)
        ay, ax = max(0, grid.ys[-1] + grid.tile_h - h), max(0, grid.xs[-1] + grid.tile_w - w)
        opt_p, sar_p = pad_reflect(opt, by, ay, bx, ax), pad_reflect(sar, by, ay, bx, ax)
        acc = np.zeros((self.num_classes, h, w), np.float32)
        wsum = np.zeros((h, w), np.float32)
        windows = [(y, x) for y in grid.ys for x in grid.xs]
        step = self.default_batch
        for start in range(0, len(windows), step):
            chunk = windows[start:start + step]
            o = np.stack([opt_p[:, y + by:y + by + grid.tile_h, x + bx:x + bx + grid.tile_w] for y, x in chunk])
            s = np.stack([sar_p[:, y + by:y + by + grid.tile_h, x + bx:x + bx + grid.tile_w] for y, x in chunk])
            for (y, x), sc in zip(chunk, self.scores(o, s)):
                y0, y1, x0, x1 = max(y, 0), min(y + grid.tile_h, h), max(x, 0), min(x + grid.tile_w, w)
                wt = weights[y0 - y:y1 - y, x0 - x:x1 - x]
                acc[:, y0:y1, x0:x1] += sc[:, y0 - y:y1 - y, x0 - x:x1 - x] * wt
                wsum[y0:y1, x0:x1] += wt
        acc /= wsum
        return acc

    # -- scenes ----------------------------------------------------------------------------------------------
    def classify_scene(self, optical: str | os.PathLike, sar: str | os.PathLike, output: str | os.PathLike,
                       **options: Any) -> "SceneSummary":
        """Classify a GeoTIFF pair into a COG land-cover map; see ``asanet_rt.scene_pipeline.classify_scene``."""
        from .scene_pipeline import classify_scene

        return classify_scene(self, optical, sar, output, **options)

    # -- lifetime --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend (session, engine, device memory). Safe to call twice."""
        self.runner.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Classifier({self.path!r}, backend={self.runner.backend}, classes={len(self.classes)}, "
                f"bands={','.join(self.optical_bands)}, tile={self.tile_range[0]}-{self.tile_range[1]})")
