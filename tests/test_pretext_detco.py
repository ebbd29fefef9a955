"""DetCo: jigsaw geometry, local head, the three InfoNCE terms per stage, queues, training step, export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslzoo.pretext.dense_losses import LocalProjectionHead, detco_stage_losses, jigsaw_boxes, jigsaw_patches


@pytest.mark.parametrize(("height", "width"), [(12, 12), (32, 32), (10, 14)])
def test_jigsaw_boxes_tile_the_view_exactly_once(height, width):
    boxes = jigsaw_boxes(height, width, grid=3)
    assert len(boxes) == 9
    cover = torch.zeros(height, width, dtype=torch.int64)
    for y0, x0, y1, x1 in boxes:
        assert y1 > y0 and x1 > x0
        cover[y0:y1, x0:x1] += 1
    assert torch.equal(cover, torch.ones_like(cover))
    # row-major order: the first box is top-left, the last bottom-right
    assert boxes[0][:2] == (0, 0) and boxes[-1][2:] == (height, width)


def test_jigsaw_patches_are_the_tiles_of_the_view():
    images = torch.arange(2 * 3 * 12 * 12, dtype=torch.float32).reshape(2, 3, 12, 12)
    patches = jigsaw_patches(images, grid=3)
    assert patches.shape == (2, 9, 3, 4, 4)
    # reassembling the 3x3 tiles gives the view back
    rows = [torch.cat([patches[:, 3 * r + c] for c in range(3)], dim=3) for r in range(3)]
    assert torch.equal(torch.cat(rows, dim=2), images)
    resized = jigsaw_patches(images, grid=3, patch_size=8)
    assert resized.shape == (2, 9, 3, 8, 8)
    uneven = jigsaw_patches(torch.randn(1, 3, 10, 10), grid=3)
    assert uneven.shape == (1, 9, 3, 3, 3)
    with pytest.raises(ValueError, match="cannot tile"):
        jigsaw_boxes(2, 2, grid=3)


def test_local_head_concatenates_patches_in_order():
    torch.manual_seed(0)
    head = LocalProjectionHead(in_channels=10, num_patches=9, patch_dim=4, hidden_dim=16, out_dim=8)
    features = torch.randn(2, 9, 10)
    out = head(features)
    assert out.shape == (2, 8)
    expected = head.mlp(torch.cat([head.patch_projection(features[:, p]) for p in range(9)], dim=1))
    assert torch.allclose(out, expected, atol=1e-6)
    # the order of patches matters (jigsaw layout is part of the representation)
    assert not torch.allclose(head(features.flip(1)), out)
    with pytest.raises(ValueError, match="pooled patch features"):
        head(torch.randn(2, 4, 10))


def _naive_info_nce(query, key, queue, temperature):
    total = 0.0
    for q, k in zip(query, key, strict=True):
        positive = math.exp(float(q @ k) / temperature)
        negatives = sum(math.exp(float(q @ n) / temperature) for n in queue)
        total += -math.log(positive / (positive + negatives))
    return total / query.shape[0]


def test_detco_stage_terms_match_naive_references():
    torch.manual_seed(3)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)

    qg, ql, kg, kl = unit(4, 6), unit(4, 6), unit(4, 6), unit(4, 6)
    global_queue, local_queue = unit(5, 6), unit(3, 6)
    terms = detco_stage_losses(qg, ql, kg, kl, global_queue, local_queue, temperature=0.2)
    assert set(terms) == {"global", "local", "local_global"}
    assert terms["global"].item() == pytest.approx(_naive_info_nce(qg, kg, global_queue, 0.2), rel=1e-10)
    assert terms["local"].item() == pytest.approx(_naive_info_nce(ql, kl, local_queue, 0.2), rel=1e-10)
    assert terms["local_global"].item() == pytest.approx(_naive_info_nce(ql, kg, global_queue, 0.2), rel=1e-10)


# ----------------------------------------------------------------------------- the method

SIZE = 36
SMALL = {"head_hidden_dim": 32, "head_out_dim": 8, "patch_dim": 8}  # the compact (PIRL-style) local head


def make_detco(samples_per_epoch: int | None = 12, **params):
    from sslzoo.pretext.base import PretextConfig
    from sslzoo.pretext.registry import get_method

    config = PretextConfig(
        method="detco",
        backbone="resnet18",
        input_size=SIZE,
        batch_size=4,
        samples_per_epoch=samples_per_epoch,
        params={**SMALL, **params},
    )
    return get_method("detco")(config)


def test_published_heads_are_the_default():
    """The authors' detco_resnet.py: global MLP(C -> C -> 128), local MLP(9C -> 9C -> 128) on the concatenated tiles."""
    torch.manual_seed(0)
    method = make_detco(**{"head_hidden_dim": 0, "patch_dim": 0, "head_out_dim": 128})
    for head, c in zip(method.local_heads, (64, 128, 256, 512), strict=True):
        assert isinstance(head.patch_projection, torch.nn.Identity)
        assert (head.mlp[0].in_features, head.mlp[0].out_features, head.mlp[2].out_features) == (9 * c, 9 * c, 128)
    for head, c in zip(method.global_heads, (64, 128, 256, 512), strict=True):
        assert (head.net[0].in_features, head.net[0].out_features) == (c, c)
    from sslzoo.pretext.registry import get_method

    defaults = get_method("detco").default_params
    assert defaults["head_hidden_dim"] == 0 and defaults["patch_dim"] == 0
    loss, _ = method.training_loss(torch.randn(2, 3, SIZE, SIZE), torch.randn(2, 3, SIZE, SIZE))
    assert torch.isfinite(loss)


def test_registered_and_bad_stage_weights_rejected():
    from sslzoo.errors import ConfigError
    from sslzoo.pretext.registry import get_method, method_names

    assert "detco" in method_names()
    cls = get_method("detco")
    assert cls.default_params["stage_weights"] == [0.1, 0.4, 0.7, 1.0]
    assert set(cls.psi) <= set(cls.default_params)
    with pytest.raises(ConfigError, match="stage_weights"):
        make_detco(stage_weights=[1.0, 1.0])


def test_loss_is_the_weighted_sum_of_the_terms_with_own_queues(caplog):
    torch.manual_seed(0)
    with caplog.at_level("INFO"):
        method = make_detco(samples_per_epoch=6, queue_size=1000)
    assert "clamped to 6" in caplog.text
    queues = [*method.global_queues, *method.local_queues]
    assert len(queues) == 8 and len({id(q) for q in queues}) == 8
    assert all(q.size == 6 for q in queues)
    views = torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE)
    method.training_loss(*views)
    loss, terms = method.training_loss(*views)
    weights = [0.1, 0.4, 0.7, 1.0]
    stage_sum = sum(w * terms[f"stage{s}"] for w, s in zip(weights, (2, 3, 4, 5), strict=True))
    assert torch.isclose(loss, stage_sum, rtol=1e-5)
    assert torch.isclose(loss, terms["global"] + terms["local"] + terms["local_global"], rtol=1e-5)
    # 3 steps x 4 keys wrap each queue of 6
    method.training_loss(*views)
    assert all(q.features().shape == (6, 8) for q in queues)


def test_momentum_branch_gets_no_gradient_and_follows_the_ema():
    torch.manual_seed(1)
    method = make_detco(momentum=0.8)
    views = torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE)
    method.training_loss(*views)
    loss, _ = method.training_loss(*views)
    loss.backward()
    for module in (method.key_encoder, method.key_global_heads, method.key_local_heads):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    # every level and both heads receive gradient (multi-level supervision)
    assert all(h.net[0].weight.grad is not None for h in method.global_heads)
    assert all(h.patch_projection.weight.grad is not None for h in method.local_heads)
    assert method.encoder.layer1[0].conv1.weight.grad is not None
    with torch.no_grad():
        for p in method.local_heads.parameters():
            p.add_(1.0)  # stands in for an optimiser step
    key_before = [p.detach().clone() for p in method.key_local_heads.parameters()]
    method.after_optimizer_step()
    for old, online, key in zip(
        key_before, method.local_heads.parameters(), method.key_local_heads.parameters(), strict=True
    ):
        assert torch.allclose(key, 0.8 * old + 0.2 * online.detach(), atol=1e-6)


def test_local_representation_sees_only_the_tiles():
    """The local branch encodes the 9 tiles separately: changing one tile changes it, no tile leaks across."""
    torch.manual_seed(2)
    method = make_detco().eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        _, local = method.representations(images, method.encoder, method.global_heads, method.local_heads)
        patches = jigsaw_patches(images, 3)
        features = method.encoder(patches.flatten(0, 1))
        pooled = features[5].mean(dim=(2, 3)).reshape(2, 9, -1)
        assert torch.allclose(local[3], method.local_heads[3](pooled), atol=1e-5)


def test_training_step_and_strict_export(tmp_path):
    import pytorch_lightning as pl
    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    method = make_detco(samples_per_epoch=8)
    data = TensorDataset(torch.randn(8, 3, SIZE, SIZE), torch.randn(8, 3, SIZE, SIZE))
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(method, DataLoader(data, batch_size=4))
    assert trainer.global_step == 2
    out = method.export_encoder(tmp_path / "enc")
    unet = smp.Unet("resnet18", encoder_weights=None)
    torch.nn.Module.load_state_dict(unet.encoder, load_file(str(out / "model.safetensors")), strict=True)
    assert torch.equal(unet.encoder.layer4[1].conv2.weight, method.encoder.layer4[1].conv2.weight.detach())
