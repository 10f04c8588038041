"""The torch network against formula implementations in numpy, official key lists and the official code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asanet_rt.export.checkpoint import checkpoint_filter_fn, infer_arch
from asanet_rt.export.convnext import GRN
from asanet_rt.export.fusion import CFM, SFM
from asanet_rt.export.network import build_model
from asanet_rt.metadata import ArchSpec

from model_utils import randomise

torch.manual_seed(0)


def np_gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def np_softmax_c(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_conv1x1(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    y = np.einsum("oc,nchw->nohw", w.reshape(w.shape[0], -1), x)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def np_bn(x: np.ndarray, sd: dict, prefix: str, eps: float = 1e-5) -> np.ndarray:
    shape = (1, -1, 1, 1)
    scale = sd[f"{prefix}.weight"] / np.sqrt(sd[f"{prefix}.running_var"] + eps)
    return (x - sd[f"{prefix}.running_mean"].reshape(shape)) * scale.reshape(shape) + sd[f"{prefix}.bias"].reshape(
        shape)


def numpy_state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in module.state_dict().items()}


def test_grn_matches_formula():
    grn = randomise(GRN(24))
    x = torch.randn(2, 5, 7, 24)
    sd = numpy_state(grn)
    xn = x.double().numpy()
    g = np.sqrt((xn ** 2).sum(axis=(1, 2), keepdims=True))
    n = g / (g.mean(axis=-1, keepdims=True) + 1e-6)
    expected = sd["gamma"] * (xn * n) + sd["beta"] + xn
    np.testing.assert_allclose(grn(x).detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_sfm_matches_formula():
    sfm = randomise(SFM(40))
    assert sfm.sconv[0].out_channels == 32  # max(32, 40 // 16)
    x1, x2 = torch.randn(2, 40, 9, 11), torch.randn(2, 40, 9, 11)
    sd = numpy_state(sfm)
    a, b = x1.double().numpy(), x2.double().numpy()

    def gate(v):
        h = np_gelu(np_conv1x1(v, sd["sconv.0.weight"], sd["sconv.0.bias"]))
        return np_sigmoid(np_conv1x1(h, sd["sconv.2.weight"], sd["sconv.2.bias"]))

    d = a - b
    expected1 = a + a * gate(d.max(axis=(2, 3), keepdims=True))
    expected2 = b + b * gate((-d).max(axis=(2, 3), keepdims=True))
    y1, y2 = sfm(x1, x2)
    np.testing.assert_allclose(y1.detach().numpy(), expected1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y2.detach().numpy(), expected2, rtol=1e-5, atol=1e-5)


def test_cfm_matches_formula():
    cfm = randomise(CFM(16))
    x1, x2 = torch.randn(2, 16, 6, 5), torch.randn(2, 16, 6, 5)
    sd = numpy_state(cfm)
    a, b = x1.double().numpy(), x2.double().numpy()

    def mlp(v, p):
        h = np_bn(np_conv1x1(v, sd[f"{p}.fc1.conv.weight"]), sd, f"{p}.fc1.bn")
        centre = sd[f"{p}.dwconv.conv.weight"][:, 0, 1, 1]  # a 3x3 conv on a 1x1 map sees its centre tap only
        h = np.clip(h * centre.reshape(1, -1, 1, 1) + sd[f"{p}.dwconv.conv.bias"].reshape(1, -1, 1, 1), 0, 6)
        return np_bn(np_conv1x1(h, sd[f"{p}.fc2.conv.weight"]), sd, f"{p}.fc2.bn")

    xc = np_conv1x1(np.concatenate([a, b], 1), sd["catconv1.weight"], sd["catconv1.bias"])
    g = xc.mean(axis=(2, 3), keepdims=True)
    w1, w2 = a * np_sigmoid(mlp(g, "mlp1")), b * np_sigmoid(mlp(g, "mlp2"))
    wc = np_conv1x1(np.concatenate([w1, w2], 1), sd["catconv2.weight"], sd["catconv2.bias"])
    expected = (w1 * np_softmax_c(np_conv1x1(wc, sd["fc1.weight"], sd["fc1.bias"]))
                + w2 * np_softmax_c(np_conv1x1(wc, sd["fc2.weight"], sd["fc2.bias"])))
    np.testing.assert_allclose(cfm(x1, x2).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_tiny_keys_and_shapes_equal_official():
    from parity_data import official_keys_tiny

    official = official_keys_tiny()
    official = {k: v for k, v in official.items() if not k.startswith("auxiliary_head.")}
    model = build_model(ArchSpec.from_name("tiny", num_classes=7))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official
    assert sum(v.numel() for v in model.parameters()) == 82_461_623


@pytest.mark.parametrize("name", ["atto", "tiny"])
def test_arch_inferred_from_state_dict(name):
    arch = ArchSpec.from_name(name, num_classes=6)
    sd = build_model(arch).state_dict()
    sd["auxiliary_head.conv_seg.weight"] = torch.zeros(6, 128, 1, 1)
    inferred = infer_arch(checkpoint_filter_fn(sd))
    assert inferred == arch and inferred.name == name


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (100, 37)])
def test_any_size_at_least_32(size):
    arch = ArchSpec((1, 1, 1, 1), (8, 16, 24, 32), 16, 3)
    model = randomise(build_model(arch))
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size), torch.randn(1, 3, *size))
    assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


def test_parity_with_official_code(parity_fixture):
    """The official code's logits, decode-head logits and fused features (tests/data/parity)."""
    from asanet_rt.export import load_checkpoint

    torch.set_num_threads(2)
    model = load_checkpoint(parity_fixture / "checkpoint.pth")
    inputs = np.load(parity_fixture / "inputs.npz")
    outputs = np.load(parity_fixture / "outputs.npz")
    for case in "abc":
        opt, sar = torch.from_numpy(inputs[f"{case}_opt"]), torch.from_numpy(inputs[f"{case}_sar"])
        with torch.no_grad():
            feats = model.backbone(opt, sar)
            decode = model.decode_head(feats)
            logits = model(opt, sar)
        np.testing.assert_allclose(logits.numpy(), outputs[f"{case}_logits"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(decode.numpy(), outputs[f"{case}_decode_logits"], atol=1e-4, rtol=0)
        for i, feat in enumerate(feats):
            np.testing.assert_allclose(feat.numpy(), outputs[f"{case}_feat{i}"], atol=1e-5, rtol=0)
        agree = (logits.argmax(1).numpy() == outputs[f"{case}_argmax"]) | outputs[f"{case}_argmax_ambiguous"]
        assert agree.all()


def test_per_stage_streams_match_official(parity_fixture):
    from asanet_rt.export import load_checkpoint

    model = load_checkpoint(parity_fixture / "checkpoint.pth")
    inputs, outputs = np.load(parity_fixture / "inputs.npz"), np.load(parity_fixture / "outputs.npz")
    enc = model.backbone
    x_opt, x_sar = torch.from_numpy(inputs["a_opt"]), torch.from_numpy(inputs["a_sar"])
    compared = 0
    with torch.no_grad():
        for i in range(4):
            x_opt, x_sar = enc.backbone.stage(i, x_opt), enc.backbone2.stage(i, x_sar)
            stage = {"opt": x_opt, "sar": x_sar}
            x_opt, x_sar = enc.FRMs[i](x_opt, x_sar)
            sfm = {"opt": x_opt, "sar": x_sar}
            x_opt, x_sar = enc.backbone.out_norm(i)(x_opt), enc.backbone2.out_norm(i)(x_sar)
            norm = {"opt": x_opt, "sar": x_sar}
            for step, values in (("stage", stage), ("sfm", sfm), ("norm", norm)):
                for s in ("opt", "sar"):
                    key = f"a_stage{i}_{s}_{step}"
                    if key in outputs:
                        np.testing.assert_allclose(values[s].numpy(), outputs[key], atol=1e-4, rtol=0, err_msg=key)
                        compared += 1
    assert compared >= 6  # the fixture keeps at least one stage's six streams


def test_checkpoint_metadata(parity_fixture):
    from asanet_rt.export import load_checkpoint

    meta = load_checkpoint(parity_fixture / "checkpoint.pth").metadata
    assert meta.classes == ("buildings", "roads", "greenery", "water", "farmland")
    assert meta.palette[1] == (0, 0, 255)
    assert meta.optical_mean == (80.475, 98.217, 106.364) and meta.sar_std == (48.475,) * 3
    assert meta.optical_channels == ("blue", "green", "red")
    assert meta.native_tile == 512 and len(meta.checkpoint_sha256) == 64


def test_save_load_round_trip(tmp_path):
    from asanet_rt.export import load_checkpoint

    arch = ArchSpec((1, 2, 1, 1), (8, 16, 24, 32), 16, 3)
    model = randomise(build_model(arch), seed=3)
    path = tmp_path / "model.pth"
    torch.save({"meta": {"dataset_meta": {"classes": ("a", "b", "c"), "palette": [[1, 2, 3]] * 3}},
                "state_dict": model.state_dict()}, path)
    loaded = load_checkpoint(path)
    x, s = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, s), loaded(x, s))
    assert loaded.metadata.classes == ("a", "b", "c") and loaded.arch == arch


def test_mismatched_state_dict_names_keys(tmp_path):
    from asanet_rt.export import load_checkpoint
    from asanet_rt.errors import AsanetError

    sd = build_model(ArchSpec((1, 1, 1, 1), (8, 16, 24, 32), 16, 3)).state_dict()
    del sd["backbone.FFMs.2.fc1.weight"]
    sd["decode_head.extra.weight"] = torch.zeros(1)
    sd["backbone.FRMs.0.sconv.0.bias"] = torch.zeros(7)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(AsanetError) as info:
        load_checkpoint(tmp_path / "bad.pth")
    message = str(info.value)
    for part in ("bad.pth", "backbone.FFMs.2.fc1.weight", "decode_head.extra.weight",
                 "backbone.FRMs.0.sconv.0.bias", "widths 8-16-24-32"):
        assert part in message
