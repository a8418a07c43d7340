"""Backbones and heads: forward pass of every configured backbone on 45x45 and 64x64 cutouts, both heads,
PDF summaries, local weights with stem adaptation, and the bad-input messages."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from timm.models._manipulate import adapt_input_conv

from conftest import tiny_config
from deepred.contracts.config import ConfigError
from deepred.models.backbones import BackboneError, create_backbone, load_local_weights
from deepred.models.heads import make_grid, pdf_quantiles, pdf_summary, soft_targets
from deepred.models.registry import build_model

ARCHS = ("resnet", "efficientnet", "swin", "mixer")


def _config(head="point"):
    cfg = tiny_config({"t": {}})
    for a in ARCHS:
        cfg["architectures"][a]["head"] = head
    return cfg


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_init_head_starts_at_the_label_centre(arch):
    """zero_init_head: every input gets the label centre (a flat PDF), not a random value; off keeps timm's init."""
    torch.manual_seed(0)
    off = _config()
    off["architectures"][arch]["zero_init_head"] = False
    if arch != "mixer":  # timm's MlpMixer zero-initializes its own head
        assert build_model(arch, off, 4, 45).body.get_classifier().weight.detach().abs().max() > 0
    for head in ("point", "pdf"):
        cfg = _config(head)
        cfg["architectures"][arch]["zero_init_head"] = True
        net = build_model(arch, cfg, 4, 45).eval()
        grid = make_grid(0.1, 1.2, 100)
        net.set_normalization(np.zeros(4), np.ones(4), 0.5, 0.2, grid if head == "pdf" else None)
        with torch.no_grad():
            z = net.point(net(torch.randn(3, 4, 45, 45) * 5))
        expected = 0.5 if head == "point" else float(grid.mean())
        np.testing.assert_allclose(z.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cutout,bands,head", [(45, 4, "point"), (64, 5, "pdf")])
def test_forward_every_backbone_both_cutouts_and_heads(arch, cutout, bands, head):
    torch.manual_seed(0)
    cfg = _config(head)
    net = build_model(arch, cfg, bands, cutout).eval()
    grid = make_grid(0.1, 1.2, cfg["architectures"][arch]["n_bins"])
    net.set_normalization(np.zeros(bands), np.ones(bands), 0.5, 0.2, grid if head == "pdf" else None)
    x = torch.randn(3, bands, cutout, cutout)
    with torch.no_grad():
        out = net(x)
        # the body really uses the pixels: different images give different features (some heads start at zero)
        feats = net.body.forward_features(net.prepare(x))
    assert out.shape == (3, 1 if head == "point" else len(grid))
    assert torch.isfinite(out).all()
    assert feats.flatten(1).std(0).max() > 0
    assert net.input_size >= cutout and net.input_size - cutout < max(1, net.input_size // 4)
    if head == "pdf":
        pdf = torch.softmax(out, 1).numpy().astype(float)
        np.testing.assert_allclose(pdf.sum(1), 1.0, atol=1e-6)
        s = pdf_summary(pdf, grid)
        assert np.all(s["z_lo68"] <= s["z_median"]) and np.all(s["z_median"] <= s["z_hi68"])
        assert np.all((s["z_mean"] >= 0.1) & (s["z_mean"] <= 1.2))
        np.testing.assert_allclose(net.point(out).numpy(), s["z_mean"], rtol=1e-5)


def test_pdf_summaries_of_known_distributions():
    grid = make_grid(0.0, 1.0, 11)  # spacing 0.1
    one_hot = np.zeros((1, 11))
    one_hot[0, 3] = 1.0  # all mass in the bin [0.25, 0.35]
    s = pdf_summary(one_hot, grid)
    assert s["z_mean"][0] == pytest.approx(0.3)
    assert s["z_median"][0] == pytest.approx(0.3)
    assert s["z_mode"][0] == pytest.approx(0.3)
    assert s["z_lo68"][0] == pytest.approx(0.25 + 0.16 * 0.1)
    assert s["z_hi68"][0] == pytest.approx(0.25 + 0.84 * 0.1)
    two = np.zeros((1, 11))
    two[0, [2, 6]] = 0.5  # median at the edge between the two masses' bins
    assert pdf_quantiles(two, grid, [0.5])[0, 0] == pytest.approx(0.25)


def test_soft_targets_keep_the_label_as_mean():
    grid = torch.linspace(0, 2, 41)
    z = torch.tensor([0.0, 0.337, 1.5, 2.0, 3.0])  # 3.0 is beyond the grid: clamped to its end
    t = soft_targets(z, grid)
    np.testing.assert_allclose(t.sum(1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose((t @ grid).numpy(), [0.0, 0.337, 1.5, 2.0, 2.0], atol=1e-6)


def test_point_head_standardizes_labels_and_pixels():
    net = build_model("resnet", _config(), 4, 45).eval()
    net.set_normalization([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], 0.6, 0.25)
    out = torch.tensor([[0.0], [2.0]])
    np.testing.assert_allclose(net.point(out).numpy(), [0.6, 1.1])
    loss = net.loss(torch.tensor([[0.0]]), torch.tensor([0.6]))
    assert float(loss) == 0.0
    # a constant image at the band means becomes zeros inside: same output as a zero image without the shift
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1).expand(1, 4, 45, 45)
    with torch.no_grad():
        a = net(x)
        net.set_normalization(np.zeros(4), np.full(4, 2.0), 0.6, 0.25)
        b = net(torch.zeros(1, 4, 45, 45))
    torch.testing.assert_close(a, b)


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown .* 'resnet50x'; known: resnet, efficientnet, swin, mixer, photoz"):
        build_model("resnet50x", _config(), 4, 45)


def test_unknown_timm_name_is_reported():
    with pytest.raises(BackboneError, match="timm has no model 'resnot18'"):
        create_backbone("resnet", {"timm_name": "resnot18"}, 4, 45, 1)


def test_input_size_that_does_not_fit_fails_at_build():
    cfg = {"timm_name": "deepred_mixer", "timm_kwargs": {"patch_size": 50, "num_blocks": 1, "embed_dim": 16}}
    with pytest.raises(BackboneError, match="mixer"):
        create_backbone("mixer", cfg, 4, 45, 1)  # patches larger than the cutout


def test_wrong_band_count_at_forward_names_both_numbers():
    net = build_model("resnet", _config(), 4, 45)
    with pytest.raises(ValueError, match=r"\(2, 5, 45, 45\).*\(B, 4, 45, 45\)"):
        net(torch.zeros(2, 5, 45, 45))


def test_local_weights_adapt_the_stem_and_say_so(tmp_path, caplog):
    torch.manual_seed(1)
    rgb = build_model("resnet", _config(), 3, 45).body  # a "pretrained" 3-band network
    path = tmp_path / "rgb.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    net = build_model("resnet", _config(), 4, 45)
    with caplog.at_level(logging.INFO, logger="deepred.backbones"):
        info = load_local_weights(net.body, path, "resnet")
    stem = "conv1.0.weight"
    assert any(stem in a and "3 -> 4" in a for a in info["adapted"])
    assert "adapted stem conv1.0.weight: 3 -> 4 input channels" in caplog.text
    want = adapt_input_conv(4, rgb.state_dict()[stem].float())
    torch.testing.assert_close(net.body.state_dict()[stem], want)
    torch.testing.assert_close(net.body.state_dict()["layer1.0.conv1.weight"], rgb.state_dict()["layer1.0.conv1.weight"])


def test_missing_weights_file_is_named(tmp_path):
    net = build_model("resnet", _config(), 4, 45)
    with pytest.raises(BackboneError, match="nothere.safetensors does not exist"):
        load_local_weights(net.body, tmp_path / "nothere.safetensors", "resnet")
