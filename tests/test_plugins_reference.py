"""The numpy references of the plugin ops against the network's own torch modules (the official math)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asanet_rt.engines.plugins import launch, reference
from asanet_rt.export.convnext import GRN
from asanet_rt.export.fusion import CFM, SFM

from model_utils import randomise

SHAPES = [(1, 40, 7, 9), (2, 64, 16, 16), (3, 32, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
def test_grn_reference_matches_module(shape):
    n, c, h, w = shape
    grn = randomise(GRN(c), seed=1)
    x = torch.randn(shape)
    expected = grn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).detach().numpy()  # the module is channel-last
    got = reference.grn(x.numpy(), grn.gamma.detach().numpy(), grn.beta.detach().numpy(), grn.eps)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_sfm_reference_matches_module(shape):
    c = shape[1]
    sfm = randomise(SFM(c), seed=2)
    x1, x2 = torch.randn(shape), torch.randn(shape)
    e1, e2 = (t.detach().numpy() for t in sfm(x1, x2))
    conv1, conv2 = sfm.sconv[0], sfm.sconv[2]
    g1, g2 = reference.sfm(x1.numpy(), x2.numpy(), conv1.weight[:, :, 0, 0].detach().numpy(),
                           conv1.bias.detach().numpy(), conv2.weight[:, :, 0, 0].detach().numpy(),
                           conv2.bias.detach().numpy())
    np.testing.assert_allclose(g1, e1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g2, e2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_cfm_gate_and_fuse_compose_to_module(shape):
    """CFMGate + the stacked fc conv + CFMFuse reproduce the whole CFM module."""
    c = shape[1]
    cfm = randomise(CFM(c), seed=3)
    x1, x2 = torch.randn(shape), torch.randn(shape)
    with torch.no_grad():
        expected = cfm(x1, x2).numpy()
        g = torch.nn.functional.adaptive_avg_pool2d(cfm.catconv1(torch.cat([x1, x2], 1)), 1)
        s = torch.cat([cfm.mlp1(g), cfm.mlp2(g)], 1).numpy()
        w = reference.cfm_gate(x1.numpy(), x2.numpy(), s)
        wc = cfm.catconv2(torch.from_numpy(w).float())
        a = torch.cat([cfm.fc1(wc), cfm.fc2(wc)], 1).numpy()
    np.testing.assert_allclose(reference.cfm_fuse(w, a), expected, rtol=1e-4, atol=1e-6)


def test_reference_accepts_fp16_inputs():
    x = np.random.default_rng(0).normal(size=(1, 8, 5, 5)).astype(np.float16)
    out = reference.grn(x, np.ones(8, np.float16), np.zeros(8, np.float16))
    assert out.dtype == np.float64 and np.isfinite(out).all()


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
