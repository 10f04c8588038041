"""The numpy references of the plugin ops against independent implementations of the official math.

Three independent witnesses for each op: torch.nn.functional written the way the official code writes the
module (float64), a per-channel / per-pixel loop in plain Python math, and the network's own torch modules
(``asanet_rt.export``). The references are what the GPU kernels are tested against, so they must be right.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asanet_rt.engines.plugins import launch, reference
from asanet_rt.export.convnext import GRN
from asanet_rt.export.fusion import CFM, SFM

from model_utils import randomise

# odd H and W, N = 2 and 3, a 1x1 map, a single column, C not a multiple of 32.
SHAPES = [(1, 40, 7, 9), (2, 48, 5, 11), (2, 64, 16, 16), (3, 32, 1, 1), (1, 72, 13, 1)]


def _rand(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _mid(c: int) -> int:
    return max(32, c // 16)  # the official SFM's hidden width


# ---- witnesses: torch.nn.functional, as the official modules write the formulas -----------------------------

def grn_torch(x, gamma, beta, eps=1e-6):
    """ConvNeXt-V2 GRN, channel-first form: torch.norm over (H, W), mean over channels."""
    x = _t(x)
    gx = torch.norm(x, p=2, dim=(2, 3), keepdim=True)
    nx = gx / (gx.mean(dim=1, keepdim=True) + eps)
    return (_t(gamma).view(1, -1, 1, 1) * (x * nx) + _t(beta).view(1, -1, 1, 1) + x).numpy()


def sfm_torch(x1, x2, w1, b1, w2, b2):
    """SFM: sconv = Conv1x1 -> nn.GELU() (exact) -> Conv1x1 on adaptive max pools of x1 - x2 and x2 - x1."""
    x1, x2 = _t(x1), _t(x2)
    k1, k2 = _t(w1)[:, :, None, None], _t(w2)[:, :, None, None]

    def sconv(v):
        return F.conv2d(F.gelu(F.conv2d(v, k1, _t(b1))), k2, _t(b2))

    a1 = torch.sigmoid(sconv(F.adaptive_max_pool2d(x1 - x2, 1)))
    a2 = torch.sigmoid(sconv(F.adaptive_max_pool2d(x2 - x1, 1)))
    return (x1 + x1 * a1).numpy(), (x2 + x2 * a2).numpy()


def cfm_gate_torch(x1, x2, s):
    c = x1.shape[1]
    s = _t(s)
    return torch.cat([_t(x1) * torch.sigmoid(s[:, :c]), _t(x2) * torch.sigmoid(s[:, c:])], dim=1).numpy()


def cfm_fuse_torch(w, a):
    c = w.shape[1] // 2
    w, a = _t(w), _t(a)
    return (w[:, :c] * F.softmax(a[:, :c], dim=1) + w[:, c:] * F.softmax(a[:, c:], dim=1)).numpy()


# ---- witnesses: loops in plain Python math -----------------------------------------------------------------

def grn_loops(x, gamma, beta, eps=1e-6):
    n, c, _, _ = x.shape
    y = np.empty(x.shape)
    for i in range(n):
        g = [math.sqrt(math.fsum(float(v) ** 2 for v in x[i, k].ravel())) for k in range(c)]
        mean = math.fsum(g) / c
        for k in range(c):
            s = g[k] / (mean + eps)
            y[i, k] = x[i, k] + gamma[k] * (x[i, k] * s) + beta[k]
    return y


def sfm_loops(x1, x2, w1, b1, w2, b2):
    n, c, _, _ = x1.shape
    m = w1.shape[0]

    def gate(v):
        h = []
        for j in range(m):
            z = math.fsum(w1[j, k] * v[k] for k in range(c)) + b1[j]
            h.append(0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0))))
        out = []
        for k in range(c):
            z = math.fsum(w2[k, j] * h[j] for j in range(m)) + b2[k]
            out.append(1.0 + 1.0 / (1.0 + math.exp(-z)))
        return out

    y1, y2 = np.empty(x1.shape), np.empty(x2.shape)
    for i in range(n):
        d = [(x1[i, k] - x2[i, k]).ravel() for k in range(c)]
        p, q = gate([max(dk) for dk in d]), gate([-min(dk) for dk in d])
        for k in range(c):
            y1[i, k], y2[i, k] = x1[i, k] * p[k], x2[i, k] * q[k]
    return y1, y2


def cfm_fuse_loops(w, a):
    n, c2, h, wd = w.shape
    c = c2 // 2
    y = np.zeros((n, c, h, wd))
    for i in range(n):
        for r in range(h):
            for col in range(wd):
                for half in (0, c):
                    logits = [float(a[i, half + k, r, col]) for k in range(c)]
                    top = max(logits)
                    e = [math.exp(v - top) for v in logits]
                    total = math.fsum(e)
                    for k in range(c):
                        y[i, k, r, col] += w[i, half + k, r, col] * e[k] / total
    return y


# ---- the references against the witnesses -----------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_grn_reference(shape):
    c = shape[1]
    x, gamma, beta = _rand(shape, 0), _rand((c,), 1), _rand((c,), 2)
    got = reference.grn(x, gamma, beta, 1e-6)
    np.testing.assert_allclose(got, grn_torch(x, gamma, beta, 1e-6), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, grn_loops(x, gamma, beta, 1e-6), rtol=1e-12, atol=1e-12)


def test_grn_reference_uses_eps_attribute():
    x, gamma, beta = _rand((1, 8, 3, 3), 0, 1e-4), _rand((8,), 1), _rand((8,), 2)
    np.testing.assert_allclose(reference.grn(x, gamma, beta, 1e-3), grn_torch(x, gamma, beta, 1e-3), rtol=1e-12)
    assert not np.allclose(reference.grn(x, gamma, beta, 1e-3), reference.grn(x, gamma, beta, 1e-6))


@pytest.mark.parametrize("shape", SHAPES)
def test_sfm_reference(shape):
    c = shape[1]
    m = _mid(c)
    x1, x2 = _rand(shape, 3), _rand(shape, 4)
    w1, b1 = _rand((m, c), 5, 1 / math.sqrt(c)), _rand((m,), 6)
    w2, b2 = _rand((c, m), 7, 1 / math.sqrt(m)), _rand((c,), 8)
    got = reference.sfm(x1, x2, w1, b1, w2, b2)
    for witness in (sfm_torch, sfm_loops):
        for g, e in zip(got, witness(x1, x2, w1, b1, w2, b2)):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_cfm_gate_reference(shape):
    n, c = shape[:2]
    x1, x2, s = _rand(shape, 9), _rand(shape, 10), _rand((n, 2 * c, 1, 1), 11, 3.0)
    got = reference.cfm_gate(x1, x2, s)
    assert got.shape == (n, 2 * c) + shape[2:]
    np.testing.assert_allclose(got, cfm_gate_torch(x1, x2, s), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", SHAPES)
def test_cfm_fuse_reference(shape):
    n, c, h, w = shape
    wt, a = _rand((n, 2 * c, h, w), 12), _rand((n, 2 * c, h, w), 13, 3.0)
    got = reference.cfm_fuse(wt, a)
    assert got.shape == shape
    np.testing.assert_allclose(got, cfm_fuse_torch(wt, a), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, cfm_fuse_loops(wt, a), rtol=1e-12, atol=1e-12)


def test_cfm_fuse_reference_is_stable_for_huge_logits():
    """Logits far beyond exp's range (as an fp16 engine can produce) still give the softmax, not inf/nan."""
    wt, a = _rand((1, 16, 3, 5), 14), _rand((1, 16, 3, 5), 15, 1.0) + 1000.0
    a[:, 8:] -= 3000.0
    got = reference.cfm_fuse(wt, a)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, cfm_fuse_torch(wt, a), rtol=1e-12, atol=1e-12)


# ---- float16 inputs ----------------------------------------------------------------------------------------

def test_fp16_inputs_are_widened_before_any_arithmetic():
    """fp16 in, float64 out, same as the float64 math on the fp16 values: sums of squares that overflow fp16
    (300^2 * 49 > 65504) stay finite, so the reference is a fair target for fp16 kernels that accumulate in float."""
    x = (_rand((2, 8, 7, 7), 16, 100.0) + 300.0).astype(np.float16)
    gamma, beta = _rand((8,), 17).astype(np.float16), _rand((8,), 18).astype(np.float16)
    got = reference.grn(x, gamma, beta)
    assert got.dtype == np.float64 and np.isfinite(got).all()
    wide = [v.astype(np.float64) for v in (x, gamma, beta)]
    np.testing.assert_array_equal(got, reference.grn(*wide))
    np.testing.assert_allclose(got, grn_torch(*wide), rtol=1e-12)

    x1, x2 = _rand((2, 40, 5, 3), 19).astype(np.float16), _rand((2, 40, 5, 3), 20).astype(np.float16)
    params = [_rand(s, 21 + i, 0.2).astype(np.float16) for i, s in enumerate([(32, 40), (32,), (40, 32), (40,)])]
    for g, e in zip(reference.sfm(x1, x2, *params), sfm_torch(x1, x2, *params)):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    s = _rand((2, 80, 1, 1), 25).astype(np.float16)
    np.testing.assert_allclose(reference.cfm_gate(x1, x2, s), cfm_gate_torch(x1, x2, s), rtol=1e-13)
    wt, a = _rand((2, 80, 5, 3), 26).astype(np.float16), _rand((2, 80, 5, 3), 27, 4.0).astype(np.float16)
    np.testing.assert_allclose(reference.cfm_fuse(wt, a), cfm_fuse_torch(wt, a), rtol=1e-12, atol=1e-12)


# ---- the network's own modules (asanet_rt.export) agree with the contract ----------------------------------

@pytest.mark.parametrize("shape", SHAPES[:3])
def test_grn_reference_matches_module(shape):
    grn = randomise(GRN(shape[1]), seed=1)
    x = torch.randn(shape)
    expected = grn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).detach().numpy()  # the module is channel-last
    got = reference.grn(x.numpy(), grn.gamma.detach().numpy(), grn.beta.detach().numpy(), grn.eps)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_sfm_reference_matches_module(shape):
    sfm = randomise(SFM(shape[1]), seed=2)
    x1, x2 = torch.randn(shape), torch.randn(shape)
    e1, e2 = (t.detach().numpy() for t in sfm(x1, x2))
    conv1, conv2 = sfm.sconv[0], sfm.sconv[2]
    assert conv1.weight.shape[0] == _mid(shape[1])
    g1, g2 = reference.sfm(x1.numpy(), x2.numpy(), conv1.weight[:, :, 0, 0].detach().numpy(),
                           conv1.bias.detach().numpy(), conv2.weight[:, :, 0, 0].detach().numpy(),
                           conv2.bias.detach().numpy())
    np.testing.assert_allclose(g1, e1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g2, e2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_cfm_gate_and_fuse_compose_to_module(shape):
    """CFMGate + the stacked fc conv + CFMFuse reproduce the whole CFM module."""
    cfm = randomise(CFM(shape[1]), seed=3)
    x1, x2 = torch.randn(shape), torch.randn(shape)
    with torch.no_grad():
        expected = cfm(x1, x2).numpy()
        g = F.adaptive_avg_pool2d(cfm.catconv1(torch.cat([x1, x2], 1)), 1)
        s = torch.cat([cfm.mlp1(g), cfm.mlp2(g)], 1).numpy()
        w = reference.cfm_gate(x1.numpy(), x2.numpy(), s)
        wc = cfm.catconv2(torch.from_numpy(w).float())
        a = torch.cat([cfm.fc1(wc), cfm.fc2(wc)], 1).numpy()
    np.testing.assert_allclose(reference.cfm_fuse(w, a), expected, rtol=1e-4, atol=1e-6)


# ---- launch plans (shared by CuPy, cuda-python and the AOT path) -------------------------------------------

def test_launch_plans_cover_every_element():
    plan = launch.grn_plan(2, 3072, 8, 8, "float16", 1e-6)
    assert [step.kernel for step in plan.launches] == ["grn_norm_f16", "grn_scale_f32", "grn_apply_f16"]
    assert plan.launches[0].grid[0] == 2 * 3072 and plan.launches[1].block[0] == 1024
    sfm = launch.sfm_plan(1, 768, 8, 8, 48, "float32")
    assert sfm.launches[1].grid == (1, 2, 1) and sfm.launches[1].shared_bytes == 4 * (768 + 48)
    assert sfm.workspace == {"pq": 1536, "gates": 1536}
    offsets = sfm.workspace_offsets()
    assert offsets["gates"] % 256 == 0 and sfm.workspace_bytes >= 4 * 3072
    with pytest.raises(ValueError, match="float32 or float16"):
        launch.cfm_fuse_plan(1, 8, 4, 4, "int8")


@pytest.mark.parametrize("n,c,h,w", [(1, 40, 7, 9), (3, 96, 64, 64), (1, 768, 8, 8), (2, 3072, 5, 7)])
def test_launch_geometry_is_legal(n, c, h, w):
    """Blocks are whole warps of at most 1024 threads; grid-stride grids stay within CUDA's limits."""
    plans = [launch.grn_plan(n, c, h, w, "float32", 1e-6), launch.sfm_plan(n, c, h, w, _mid(c), "float16"),
             launch.cfm_gate_plan(n, c, h, w, "float32"), launch.cfm_fuse_plan(n, c, h, w, "float16")]
    for plan in plans:
        for step in plan.launches:
            assert step.block[0] % 32 == 0 and 32 <= step.block[0] <= 1024, step
            assert 1 <= step.grid[0] < 2**31 and step.grid[1] <= 65535, step
            assert step.shared_bytes <= 48 * 1024, step  # no opt-in needed for more dynamic shared memory
