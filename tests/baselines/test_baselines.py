"""Neural baselines: layer structure against the published descriptions, shapes, PDFs, and that each
one truly learns redshift from pixels (beats the training median by >= 2x in NMAD on a tiny dataset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepred.contracts.processed import ProcessedDataset
from deepred.core.metrics import metric_values, sample_arrays
from deepred.core.model_names import neural_baselines
from deepred.models.baselines import (
    PASQUET_BINS,
    PASQUET_FC,
    PASQUET_INCEPTION,
    BaselineError,
    Inception,
    baseline_z_range,
    build_baseline,
    network_keys,
    registered_baselines,
)
from conftest import tiny_config


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def _convs(model, k=None):
    return [m for m in _layers(model, nn.Conv2d) if k is None or m.kernel_size == (k, k)]


def test_photoz_full_size_matches_pasquet_2019():
    """conv 5x5 (64) + PReLU, 5 inception blocks with the published S1/S2 widths (last without 5x5),
    3 average poolings, FC 1096 x 2, 180 outputs; 64x64 ugriz as in the paper."""
    net = build_baseline("photoz", 5, 64, PASQUET_BINS, width=1.0, fc=PASQUET_FC)
    stem = net.features[0][0]
    assert stem.kernel_size == (5, 5) and stem.out_channels == 64 and stem.in_channels == 5
    assert isinstance(net.features[0][1], nn.PReLU)
    blocks = _layers(net, Inception)
    assert len(blocks) == 5
    for block, (s1, s2) in zip(blocks, PASQUET_INCEPTION):
        assert block.direct[0].out_channels == s2 and block.direct[0].kernel_size == (1, 1)
        assert block.b3[0][0].out_channels == s1 and block.b3[1][0].kernel_size == (3, 3)
        assert block.b3[1][0].out_channels == s2 and block.pool[0][0].out_channels == s1
    assert all(b.b5 is not None and b.b5[1][0].kernel_size == (5, 5) for b in blocks[:4])
    assert blocks[4].b5 is None
    # every convolution is followed by a PReLU: one PReLU per conv layer
    assert len(_layers(net, nn.PReLU)) == len(_convs(net)) == 1 + 4 * 6 + 4  # stem; 6 convs per block, 4 in I4
    fcs = _layers(net, nn.Linear)
    assert [f.out_features for f in fcs] == [1096, 1096, 180]
    assert fcs[0].in_features == (2 * 128 + 92) * 8 * 8  # I4 without 5x5 branch; 64 -> 32 -> 16 -> 8 px
    assert tuple(net(torch.zeros(2, 5, 64, 64)).shape) == (2, 180)


def test_photoz_default_is_a_narrow_copy_of_the_same_graph():
    full = build_baseline("photoz", 4, 45, 180, width=1.0, fc=1096)
    small = build_baseline("photoz", 4, 45, 180, width=0.125, fc=128)
    assert len(_convs(full)) == len(_convs(small)) and len(_layers(small, Inception)) == 5
    assert [c.kernel_size for c in _convs(full)] == [c.kernel_size for c in _convs(small)]
    assert _convs(small)[0].out_channels == 8
    assert tuple(small(torch.zeros(3, 4, 45, 45)).shape) == (3, 180)  # 45 px: "same" pooling rounds up


def test_photoz_pdf_sums_to_one():
    torch.manual_seed(0)
    net = build_baseline("photoz", 4, 45, 180, width=0.125, fc=64).eval()
    with torch.no_grad():
        pdf = torch.softmax(net(torch.randn(5, 4, 45, 45)), dim=1).numpy()
    assert pdf.shape == (5, 180) and np.all(pdf >= 0)
    np.testing.assert_allclose(pdf.sum(axis=1), 1.0, atol=1e-5)


def test_photoz_pdf_through_registry_sums_to_one():
    registry = pytest.importorskip("deepred.models.registry", reason="models engineer's registry not present yet")
    cfg = tiny_config({"tiny": {"n": 80}})  # enough systems for a validation split (the config check)
    net = registry.build_model("photoz", cfg, 4, 45).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 4, 45, 45))
    logits = out if torch.is_tensor(out) else out["logits"]
    assert logits.shape[-1] == cfg["baselines"]["photoz"]["n_bins"]
    np.testing.assert_allclose(torch.softmax(logits, -1).sum(-1).numpy(), 1.0, atol=1e-5)


def test_netz_matches_schuldt_2021():
    """Two 5x5 conv layers each followed by max pooling, then three fully connected layers, point output."""
    net = build_baseline("netz", 5, 64, 1, channels=[32, 64], fc=[1024, 256])
    convs = _convs(net)
    assert len(convs) == 2 and all(c.kernel_size == (5, 5) for c in convs)
    assert [c.out_channels for c in convs] == [32, 64]
    assert len(_layers(net, nn.MaxPool2d)) == 2
    fcs = _layers(net, nn.Linear)
    assert [f.out_features for f in fcs] == [1024, 256, 1]
    assert fcs[0].in_features == 64 * 16 * 16
    assert tuple(net(torch.zeros(2, 5, 64, 64)).shape) == (2, 1)


def test_a1_is_lenet5():
    net = build_baseline("a1", 4, 45, 1)
    convs = _convs(net, 5)
    assert [c.out_channels for c in convs] == [6, 16] and len(_convs(net)) == 2
    assert all(c.padding == (0, 0) for c in convs)  # "valid" convolutions as in LeNet-5
    assert [f.out_features for f in _layers(net, nn.Linear)] == [120, 84, 1]
    assert _layers(net, nn.Linear)[0].in_features == 16 * 8 * 8  # 45 -> 41 -> 20 -> 16 -> 8
    assert tuple(net(torch.zeros(2, 4, 45, 45)).shape) == (2, 1)


def test_a3_is_vgg_style():
    net = build_baseline("a3", 4, 45, 1, channels=[16, 32, 64])
    convs = _convs(net)
    assert len(convs) == 6 and all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert len(_layers(net, nn.BatchNorm2d)) == 6 and len(_layers(net, nn.MaxPool2d)) == 3
    assert len(_layers(net, nn.AdaptiveAvgPool2d)) == 1
    assert [f.out_features for f in _layers(net, nn.Linear)] == [128, 1]


def test_every_schema_baseline_has_one_registered_network_taking_its_section():
    """The names come from the schema's `baselines` sections (deepred.core.model_names), the networks from
    @register_baseline: a new baseline with only one of the two fails here, not in a workflow run."""
    assert sorted(registered_baselines()) == sorted(neural_baselines())
    for name in neural_baselines():
        section = tiny_config({"t": {}})["baselines"][name]
        assert network_keys(type(build_baseline(name, 4, 24, 1, **section))) <= set(section), name


@pytest.mark.parametrize("name", neural_baselines())
@pytest.mark.parametrize("shape", [(4, 45), (5, 64), (3, 24)])
def test_every_baseline_maps_any_band_count_and_cutout(name, shape):
    cfg = tiny_config({"t": {}})["baselines"][name]
    net = build_baseline(name, shape[0], shape[1], 7, **cfg)
    assert tuple(net(torch.zeros(2, shape[0], shape[1], shape[1])).shape) == (2, 7)


def test_bad_names_and_settings_are_clear_errors():
    with pytest.raises(BaselineError, match="unknown neural baseline 'netx'.*photoz"):
        build_baseline("netx", 4, 45, 1)
    with pytest.raises(BaselineError, match="unknown setting.*'widht'"):
        build_baseline("photoz", 4, 45, 180, widht=0.5)
    with pytest.raises(BaselineError, match="2 conv widths"):
        build_baseline("netz", 4, 45, 1, channels=[8, 16, 32])
    with pytest.raises(BaselineError, match="too small"):
        build_baseline("a1", 4, 12, 1)


def test_z_range_per_dataset_else_label_range():
    cfg = tiny_config({"sdss": {}, "other": {}})
    cfg["baselines"]["photoz"]["z_range"] = {"sdss": [0.0, 0.4]}
    assert baseline_z_range(cfg, "photoz", "sdss") == (0.0, 0.4)
    assert baseline_z_range(cfg, "photoz", "other") == tuple(cfg["datasets"]["other"]["label_range"])


def _nmad(p, t):
    return metric_values("nmad", sample_arrays(p, t), {})


@pytest.mark.parametrize("name", ["netz", "a1", "a3", "photoz"])
def test_each_baseline_learns_redshift_from_pixels(name, tiny_dataset):
    """A short plain training run (the pipeline uses deepred.training.train) beats the training median by >= 2x."""
    torch.manual_seed(0)
    ds = ProcessedDataset(tiny_dataset)
    train, test = ds.split("train"), ds.split("test")
    x, xt = torch.from_numpy(ds.images(train).copy()), torch.from_numpy(ds.images(test).copy())
    y = torch.tensor(train["z_lens"].to_numpy(), dtype=torch.float32)
    cfg = tiny_config({"t": {}})["baselines"][name]
    pdf = name == "photoz"
    grid = torch.linspace(0.0, 1.2, 60)
    net = build_baseline(name, x.shape[1], x.shape[2], 60 if pdf else 1, **cfg)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _epoch in range(30 if pdf else 25):
        net.train()
        for idx in torch.randperm(len(x)).split(32):
            out = net(x[idx])
            if pdf:  # classification over bins, as Pasquet et al.
                loss = nn.functional.cross_entropy(out, torch.bucketize(y[idx], grid).clamp(max=59))
            else:
                loss = nn.functional.l1_loss(out[:, 0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        out = net(xt)
        z = (torch.softmax(out, 1) * grid).sum(1) if pdf else out[:, 0]
    z_true = test["z_lens"].to_numpy()
    median = _nmad(np.full(len(z_true), float(np.median(y.numpy()))), z_true)
    assert _nmad(z.numpy().astype(float), z_true) < median / 2
