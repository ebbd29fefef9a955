"""Pretext methods: registry, parameters, one loss step each, momentum updates, Δθ, export, Table II."""

from __future__ import annotations

import pytest
import torch

from sslzoo.errors import ConfigError
from sslzoo.pretext.base import PretextConfig
from sslzoo.pretext.registry import build_method, get_method, method_names

CORE = ("autoencoder", "simclr", "byol", "moco", "barlowtwins")


def _config(method: str, **kw) -> PretextConfig:
    return PretextConfig(method=method, backbone="resnet18", input_size=32, batch_size=4, **kw)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_core_methods_in_table_order():
    names = method_names()
    assert [n for n in names if n in CORE] == list(CORE)
    with pytest.raises(ConfigError, match="unknown pretext method 'nope'.*simclr"):
        get_method("nope")
    with pytest.raises(ConfigError, match="baselines are not trained"):
        get_method("random")


def test_params_defaults_overrides_and_errors():
    method = build_method(_config("simclr", params={"temperature": "0.5"}))
    assert method.params == {
        "temperature": 0.5,
        "proj_hidden_dim": 1024,
        "proj_out_dim": 128,
        "positive_in_denominator": False,
    }
    assert method.projector.out_dim == 128
    with pytest.raises(ConfigError, match="no parameter.*tau.*temperature"):
        build_method(_config("simclr", params={"tau": 0.5}))
    with pytest.raises(ConfigError, match="expected a int"):
        build_method(_config("simclr", params={"proj_out_dim": "wide"}))
    with pytest.raises(ConfigError, match="unsupported backbone"):
        PretextConfig(method="simclr", backbone="vgg16")


@pytest.mark.parametrize("name", CORE)
def test_one_training_step_updates_encoder(name):
    torch.manual_seed(0)
    method = build_method(_config(name, samples_per_epoch=8))
    view1, view2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    loss, terms = method.training_loss(view1, view2)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(torch.isfinite(v) for v in terms.values())
    loss.backward()
    grad = method.encoder.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    trainable = {id(p) for g in method.configure_optimizers().param_groups for p in g["params"]}
    extras = method.extra_modules()
    for frozen in ("target_encoder", "target_projector", "key_encoder", "key_head"):
        if frozen in extras:  # momentum copies are never optimised
            assert not {id(p) for p in extras[frozen].parameters()} & trainable


def test_autoencoder_reconstructs_input_size_and_has_no_skips():
    method = build_method(_config("autoencoder"))
    x = torch.randn(2, 3, 64, 64)
    assert method.reconstruct(x).shape == x.shape
    first_block = method.decoder.blocks[0]
    assert first_block.conv1[0].in_channels == method.feature_dim  # deepest stage only, no skip channels


def test_authors_hyper_parameters_where_the_paper_is_silent():
    """τ 0.07 for the MoCo family, NT-Xent without the positive in the denominator, autoencoder smooth-L1 + Adam."""
    from sslzoo.pretext.registry import get_method

    for name in ("moco", "densecl", "detco"):
        assert get_method(name).default_params["temperature"] == 0.07
    assert get_method("simclr").default_params["positive_in_denominator"] is False
    method = build_method(_config("autoencoder"))
    assert method.params["loss"] == "smooth_l1"
    optimizer = method.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == method.config.lr
    sgd = build_method(_config("autoencoder", params={"optimizer": "sgd", "loss": "mse"})).configure_optimizers()
    assert isinstance(sgd, torch.optim.SGD)
    with pytest.raises(ConfigError, match="autoencoder"):
        build_method(_config("autoencoder", params={"optimizer": "adamw"}))


@pytest.mark.parametrize(
    "name,online,target", [("byol", "encoder", "target_encoder"), ("moco", "encoder", "key_encoder")]
)
def test_momentum_targets_follow_ema(name, online, target):
    method = build_method(_config(name, samples_per_epoch=8))
    src, dst = getattr(method, online), getattr(method, target)
    torch.testing.assert_close(dst.conv1.weight, src.conv1.weight)
    with torch.no_grad():
        src.conv1.weight.add_(1.0)
    old = dst.conv1.weight.clone()
    method.after_optimizer_step()
    m = method.current_tau if name == "byol" else method.params["momentum"]
    assert 0.99 < m < 1.0
    torch.testing.assert_close(dst.conv1.weight, m * old + (1 - m) * src.conv1.weight)


def test_moco_queue_clamped_and_filled():
    method = build_method(_config("moco", samples_per_epoch=12))
    assert method.queue_size == 12 and method.queue.keys.shape == (12, 128)
    for _ in range(4):
        method.training_loss(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    assert int(method.queue.filled) == 12 and int(method.queue.pointer) == 4


def test_delta_theta_counts_built_modules():
    simclr = build_method(_config("simclr"))
    assert simclr.extra_parameter_count() == 512 * 1024 + 2 * 1024 + 1024 * 128 + 128
    moco = build_method(_config("moco", samples_per_epoch=8))
    head = 512 * 2048 + 2048 + 2048 * 128 + 128
    assert moco.extra_parameter_count() == _numel(moco.encoder) + 2 * head  # the queue is a buffer
    byol = build_method(_config("byol"))
    assert byol.extra_parameter_count() == _numel(byol.encoder) + 2 * _numel(byol.projector) + _numel(byol.predictor)


def test_export_loads_strictly_into_smp_unet(tmp_path):
    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file

    method = build_method(_config("barlowtwins"))
    out = method.export_encoder(tmp_path / "enc", global_step=3)
    state = load_file(str(out / "model.safetensors"))
    encoder = smp.Unet("resnet18", encoder_weights=None).encoder
    torch.nn.Module.load_state_dict(encoder, state, strict=True)
    torch.testing.assert_close(encoder.conv1.weight, method.encoder.conv1.weight)
    import json

    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "barlowtwins" and config["backbone"] == "resnet18"
    assert config["training"]["params"]["lambd"] == 5e-3 and config["training"]["global_step"] == 3


def test_table_ii_rows_for_resnet50():
    from sslzoo.pretext.table import format_table, method_table

    rows = {r.method: r for r in method_table("resnet50")}
    assert set(CORE) <= set(rows) and {"random", "imagenet"} <= set(rows)
    assert rows["simclr"].delta_theta_m == pytest.approx((2048 * 1024 + 2048 + 1024 * 128 + 128) / 1e6, abs=0.01)
    assert rows["barlowtwins"].delta_theta_m == pytest.approx(12.6, abs=0.05)  # 2048-2048-2048 projector
    assert rows["moco"].delta_theta_m > 23.5  # counts the key encoder (ResNet-50: 23.5 M)
    assert rows["simclr"].paper_delta_theta_m == 2.2
    assert "temperature=0.1" in rows["simclr"].psi
    # ψ as the paper counts it, DetCo with the published heads beside the paper's +946.5 M
    from sslzoo.pretext.table import PAPER_PSI

    assert {name: rows[name].psi_count for name in PAPER_PSI} == PAPER_PSI
    assert rows["detco"].paper_delta_theta_m == 946.5
    assert rows["detco"].delta_theta_m == pytest.approx(946.5, rel=0.001)
    text = format_table(list(rows.values()), markdown=True)
    assert text.splitlines()[0].startswith("| method |") and "| simclr |" in text


def test_lightning_fit_applies_momentum_updates(tmp_path):
    from torch.utils.data import TensorDataset

    from sslzoo.pretext.train import pretrain

    torch.manual_seed(0)
    views = TensorDataset(torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32))
    out = pretrain(_config("byol", max_steps=2, lr=0.5), views, tmp_path / "byol", workers=0, progress=False)
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2
    weights = state["state_dict"]
    online, target = weights["encoder.conv1.weight"], weights["target_encoder.conv1.weight"]
    torch.manual_seed(0)  # pretrain seeds like this before building: the initial encoder
    initial = build_method(_config("byol")).encoder.conv1.weight.detach()
    assert not torch.equal(online, initial)  # SGD moved the online encoder
    assert not torch.equal(target, initial) and not torch.equal(target, online)  # EMA moved the target a little
    assert (target - initial).abs().max() < (online - initial).abs().max()
