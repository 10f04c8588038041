"""numpy references of the four plugin ops, exactly the contract's math (docs/design.md), float64 inside."""
from __future__ import annotations

import math

import numpy as np


def _f64(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _gelu(v: np.ndarray) -> np.ndarray:
    return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))


def _softmax_c(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def grn(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    x, gamma, beta = _f64(x, gamma, beta)
    g = np.sqrt((x * x).sum(axis=(2, 3), keepdims=True))
    s = g / (g.mean(axis=1, keepdims=True) + eps)
    return x + gamma.reshape(1, -1, 1, 1) * (x * s) + beta.reshape(1, -1, 1, 1)


def sfm(x1: np.ndarray, x2: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray,
        b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x1, x2, w1, b1, w2, b2 = _f64(x1, x2, w1, b1, w2, b2)
    d = x1 - x2

    def gate(v: np.ndarray) -> np.ndarray:  # (N, C) -> (N, C, 1, 1)
        return (1.0 + _sigmoid(_gelu(v @ w1.T + b1) @ w2.T + b2))[:, :, None, None]

    return x1 * gate(d.max(axis=(2, 3))), x2 * gate((-d).max(axis=(2, 3)))


def cfm_gate(x1: np.ndarray, x2: np.ndarray, s: np.ndarray) -> np.ndarray:
    x1, x2, s = _f64(x1, x2, s)
    c = x1.shape[1]
    return np.concatenate([x1 * _sigmoid(s[:, :c]), x2 * _sigmoid(s[:, c:])], axis=1)


def cfm_fuse(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    w, a = _f64(w, a)
    c = w.shape[1] // 2
    return w[:, :c] * _softmax_c(a[:, :c]) + w[:, c:] * _softmax_c(a[:, c:])
