"""The user-facing model: ``Classifier.open(path)`` then ``predict`` on arrays or ``classify_scene`` on GeoTIFFs."""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import Runner, model_feed, open_runner
from .blend import FinishedRows, RowBlender
from .errors import AsanetError
from .metadata import ModelInputs, ModelMetadata
from .tiling import TileGrid, TileSettings, TileSizeWarning, pad_reflect, round_up  # noqa: F401 - re-exported
from .tiling import default_tile as tiling_default_tile

if TYPE_CHECKING:  # imported lazily at run time: predict() needs no rasterio
    from .scene_pipeline import SceneSummary

#: Output names in the order of preference for blending: probabilities blend directly, logits via softmax.
SCORE_OUTPUTS = ("probabilities", "logits", "classes")

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
        self.path = runner.path
        #: what the model file accepts: tile and batch ranges, band order, input kind (read once)
        self.inputs: ModelInputs = runner.inputs
        outputs = tuple(runner.output_names)
        self.score_output = next((name for name in SCORE_OUTPUTS if name in outputs), None)
        if self.score_output is None:
            raise AsanetError(f"{runner.path}: model outputs {', '.join(outputs)}; the runtime needs one of "
                              f"{', '.join(SCORE_OUTPUTS)}")
        self._lock = threading.Lock()
        #: why this backend runs the model (``backend="auto"`` on an ONNX file: the probe's ranking), else ""
        self.backend_reason = ""

    @property
    def backend(self) -> str:
        """The registry name of the backend running the model."""
        return self.runner.backend

    @property
    def input_kind(self) -> str:
        return self.inputs.kind

    @property
    def optical_bands(self) -> tuple[str, ...]:
        """Names of the optical input's channels, in the order the model takes them."""
        return self.inputs.optical_bands

    @property
    def tile_range(self) -> tuple[int, int]:
        return self.inputs.tile_range

    @property
    def batch_range(self) -> tuple[int, int]:
        return self.inputs.batch_range

    @classmethod
    def open(cls, path: str | os.PathLike, backend: str = "auto", device: int = 0, *, tile: int | None = None,
             batch: int | None = None, **options: Any) -> "Classifier":
        """Open an ``.onnx`` model or a TensorRT engine; ``options`` go to the backend's runner.

        ``backend="auto"`` on an ONNX file runs the fastest installed CPU backend, measured on this model at
        ``tile`` x ``batch`` (default: its default tile, batch 1) and cached (``asanet_rt.backends.auto``).
        """
        from .backends.auto import choose_backend

        name, choice = choose_backend(path, backend, tile=tile, batch=batch, threads=options.get("threads"))
        runner = open_runner(path, backend=name, device=device, **options)
        try:
            clf = cls(runner)
        except BaseException:
            runner.close()
            raise
        clf.backend_reason = choice.reason if choice is not None else f"asked for ({backend})"
        return clf

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
        """The tile scenes are cut into unless asked (:func:`asanet_rt.tiling.default_tile`)."""
        return tiling_default_tile(self.inputs)

    @property
    def on_cpu(self) -> bool:
        """Whether the model runs on the CPU."""
        return self.runner.device == "cpu"

    @property
    def default_batch(self) -> int:
        """Tiles per inference call unless asked otherwise (see :meth:`TileSettings.choose`)."""
        return TileSettings.default_batch(self.inputs, self.on_cpu)

    def tile_settings(self, tile: int | None = None, overlap: int | None = None,
                      batch: int | None = None) -> TileSettings:
        """The tile, overlap and batch this model runs a scene with, checked against what it accepts."""
        return TileSettings.choose(self.inputs, on_cpu=self.on_cpu, tile=tile, overlap=overlap, batch=batch)

    def optical_fill(self) -> tuple[float, float, float]:
        """The training mean of each optical input band (in ``optical_bands`` order), used for nodata pixels."""
        means = dict(zip(self.metadata.optical_channels, self.metadata.optical_mean))
        default = float(np.mean(self.metadata.optical_mean))
        return tuple(float(means.get(name, default)) for name in self.optical_bands)  # type: ignore[return-value]

    def sar_fill(self) -> float:
        return float(self.metadata.sar_mean[0])

    # -- inference -------------------------------------------------------------------------------------------
    def prepare(self, batch: int, tile_h: int, tile_w: int) -> None:
        """Let the backend set up for (batch, tile_h, tile_w) tiles now rather than on the first call."""
        lo, hi = self.batch_range
        with self._lock:
            self.runner.prepare(min(max(batch, lo), hi), tile_h, tile_w)

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
            feed = model_feed(self.metadata, opt, sar_)
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
        plan = self.tile_settings(tile, overlap)
        return np.stack([self._tiled_scores(opt[i], sar[i], plan.tile, plan.overlap) for i in range(n)])

    def check_tile(self, tile: int | None) -> int:
        """``tile`` (default: :attr:`default_tile`) checked against the model's range; a clear error otherwise."""
        return self.inputs.check_tile(self.default_tile if tile is None else tile)

    def _tiled_scores(self, opt: np.ndarray, sar: np.ndarray, tile: int, overlap: int) -> np.ndarray:
        """One large in-memory image, tiled with overlap and blended by the same blender as scenes."""
        _, h, w = opt.shape
        grid = TileGrid.plan(h, w, tile, overlap, self.tile_range[0])
        blender = RowBlender(grid, self.num_classes, keep_scores=True)
        by, bx = -min(grid.ys[0], 0), -min(grid.xs[0], 0)
        ay, ax = max(0, grid.ys[-1] + grid.tile_h - h), max(0, grid.xs[-1] + grid.tile_w - w)
        opt_p, sar_p = pad_reflect(opt, by, ay, bx, ax), pad_reflect(sar, by, ay, bx, ax)
        out = np.empty((self.num_classes, h, w), np.float32)
        finished: list[FinishedRows] = []
        step = self.default_batch
        for r, y in enumerate(grid.ys):
            y0, y1 = max(y, 0), min(y + grid.tile_h, h)
            finished += blender.start_band(r, y0, np.ones((y1 - y0, w), bool), grid.cols)
            for start in range(0, grid.cols, step):
                cols = range(start, min(start + step, grid.cols))
                o = np.stack([opt_p[:, y + by:y + by + grid.tile_h, grid.xs[c] + bx:grid.xs[c] + bx + grid.tile_w]
                              for c in cols])
                s = np.stack([sar_p[:, y + by:y + by + grid.tile_h, grid.xs[c] + bx:grid.xs[c] + bx + grid.tile_w]
                              for c in cols])
                for c, sc in zip(cols, self.scores(o, s)):
                    finished += blender.add(r, c, sc)
        for rows in finished:
            out[:, rows.y0:rows.y0 + rows.scores.shape[1]] = rows.scores
        return out

    # -- scenes ----------------------------------------------------------------------------------------------
    def classify_scene(self, optical: str | os.PathLike, sar: str | os.PathLike,
                       output: str | os.PathLike | None = None,
                       **options: Any) -> "SceneSummary":
        """Classify a GeoTIFF pair into a COG land-cover map (and ``outputs=[...]`` sinks); see
        ``asanet_rt.scene_pipeline.classify_scene``."""
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
