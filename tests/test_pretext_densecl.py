"""DenseCL: dense head, correspondence, dense InfoNCE, queues, momentum encoder, export, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslzoo.pretext.dense_losses import (
    DenseProjectionHead,
    dense_info_nce,
    gather_locations,
    match_locations,
)


def test_dense_info_nce_matches_naive_loop():
    torch.manual_seed(1)
    n, d, locations, temperature = 2, 6, 4, 0.2
    query = F.normalize(torch.randn(n, d, locations, dtype=torch.float64), dim=1)
    key = F.normalize(torch.randn(n, d, locations, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(5, d, dtype=torch.float64), dim=1)
    index = torch.randint(0, locations, (n, locations))
    expected_losses = []
    for b in range(n):
        for i in range(locations):
            q = query[b, :, i]
            positive = math.exp(float(q @ key[b, :, index[b, i]]) / temperature)
            negatives = sum(math.exp(float(q @ queue[j]) / temperature) for j in range(queue.shape[0]))
            expected_losses.append(-math.log(positive / (positive + negatives)))
    expected = sum(expected_losses) / len(expected_losses)
    assert dense_info_nce(query, key, index, queue, temperature).item() == pytest.approx(expected, rel=1e-10)
    # un-normalised inputs give the same loss (normalised inside), an empty queue leaves only the positive
    assert dense_info_nce(3 * query, 2 * key, index, queue, temperature).item() == pytest.approx(expected, rel=1e-10)
    assert dense_info_nce(query, key, index, queue[:0], temperature).item() == pytest.approx(0.0, abs=1e-12)


def test_correspondence_recovers_a_spatial_permutation_and_flip():
    torch.manual_seed(2)
    n, c, h, w = 3, 16, 4, 5
    view1 = torch.randn(n, c, h, w)
    flipped = torch.flip(view1, dims=[3])  # view 2 = view 1 mirrored left-right
    index = match_locations(view1.flatten(2), flipped.flatten(2))
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    expected_flip = (ys * w + (w - 1 - xs)).flatten()
    assert torch.equal(index, expected_flip.expand(n, -1))

    permutation = torch.randperm(h * w)
    permuted = view1.flatten(2)[:, :, permutation]  # permuted[:, :, j] = view1[:, :, permutation[j]]
    # scale each key location differently: cosine similarity must ignore the norm
    permuted = permuted * torch.rand(1, 1, h * w).add(0.1).mul(10)
    index = match_locations(view1.flatten(2), permuted)
    assert torch.equal(index, torch.argsort(permutation).expand(n, -1))
    # the gathered key vectors are the query's own vectors again
    gathered = gather_locations(F.normalize(permuted, dim=1), index)
    assert torch.allclose(gathered, F.normalize(view1.flatten(2), dim=1), atol=1e-6)


def test_dense_head_shapes_and_grid_pooling():
    head = DenseProjectionHead(in_channels=32, hidden_dim=16, out_dim=8)
    dense, pooled = head(torch.randn(2, 32, 3, 4))
    assert dense.shape == (2, 8, 12) and pooled.shape == (2, 8)
    assert torch.allclose(pooled, dense.mean(dim=2))
    head7 = DenseProjectionHead(in_channels=32, hidden_dim=16, out_dim=8, grid_size=2)
    dense, _ = head7(torch.randn(2, 32, 6, 6))
    assert dense.shape == (2, 8, 4)
    # 1x1 convolutions only: each location depends on its own feature vector alone
    x = torch.randn(1, 32, 3, 3)
    y = x.clone()
    y[:, :, 0, 0] += 1.0
    assert torch.allclose(head(x)[0][:, :, 1:], head(y)[0][:, :, 1:])
    assert not torch.allclose(head(x)[0][:, :, 0], head(y)[0][:, :, 0])


# ----------------------------------------------------------------------------- the method

SIZE = 32
SMALL = {"head_hidden_dim": 64, "head_out_dim": 16}


def make_densecl(samples_per_epoch: int | None = 12, **params):
    from sslzoo.pretext.base import PretextConfig
    from sslzoo.pretext.registry import get_method

    config = PretextConfig(
        method="densecl",
        backbone="resnet18",
        input_size=SIZE,
        batch_size=4,
        samples_per_epoch=samples_per_epoch,
        params={**SMALL, **params},
    )
    return get_method("densecl")(config)


def test_registered_with_table_attributes():
    from sslzoo.pretext.registry import get_method, method_names

    assert "densecl" in method_names()
    cls = get_method("densecl")
    assert cls.default_params["temperature"] == 0.07 and cls.default_params["momentum"] == 0.999
    assert cls.default_params["dense_weight"] == 0.5
    assert set(cls.psi) <= set(cls.default_params)


def test_queues_are_clamped_to_samples_per_epoch(caplog):
    with caplog.at_level("INFO"):
        method = make_densecl(samples_per_epoch=12, queue_size=65536)
    assert method.queue.size == method.dense_queue.size == 12
    assert "clamped to 12" in caplog.text
    assert make_densecl(samples_per_epoch=100, queue_size=8).dense_queue.size == 8
    # four steps of 4 keys wrap around a queue of 12: never longer than 12
    for _ in range(4):
        method.training_loss(torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE))
    assert method.queue.features().shape == (12, 16) and method.dense_queue.features().shape == (12, 16)


def test_momentum_encoder_gets_no_gradient_and_follows_the_ema():
    torch.manual_seed(0)
    method = make_densecl(momentum=0.9)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    views = torch.randn(4, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE)
    method.training_loss(*views)  # fills the queues, so the next loss has negatives
    loss, terms = method.training_loss(*views)
    assert set(terms) == {"global", "dense"} and loss.item() > 0
    assert torch.isclose(loss, 0.5 * terms["global"] + 0.5 * terms["dense"])
    loss.backward()
    key_modules = [method.key_encoder, method.key_head, method.key_dense_head]
    assert all(p.grad is None and not p.requires_grad for m in key_modules for p in m.parameters())
    assert method.dense_head.mlp[0].weight.grad is not None and method.encoder.conv1.weight.grad is not None
    online_before = [p.detach().clone() for p in method.dense_head.parameters()]
    key_before = [p.detach().clone() for p in method.key_dense_head.parameters()]
    encoder_key_before = method.key_encoder.conv1.weight.detach().clone()
    optimizer.step()
    method.after_optimizer_step()
    for online_old, key_old, online, key in zip(
        online_before, key_before, method.dense_head.parameters(), method.key_dense_head.parameters(), strict=True
    ):
        assert not torch.equal(online_old, online)  # the step changed the online head
        assert torch.allclose(key, 0.9 * key_old + 0.1 * online.detach(), atol=1e-6)
    expected = 0.9 * encoder_key_before + 0.1 * method.encoder.conv1.weight.detach()
    assert torch.allclose(method.key_encoder.conv1.weight, expected, atol=1e-6)


def test_extra_modules_count_heads_and_momentum_copies():
    method = make_densecl()
    extra = method.extra_modules()
    assert {"head", "dense_head", "key_encoder", "key_head", "key_dense_head"} <= set(extra)
    backbone = sum(p.numel() for p in method.encoder.parameters())
    heads = sum(p.numel() for name in ("head", "dense_head") for p in extra[name].parameters())
    assert method.extra_parameter_count() == backbone + 2 * heads


def test_training_step_and_strict_export(tmp_path):
    import pytorch_lightning as pl
    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    method = make_densecl(samples_per_epoch=8)
    data = TensorDataset(torch.randn(8, 3, SIZE, SIZE), torch.randn(8, 3, SIZE, SIZE))
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    key_before = method.key_encoder.conv1.weight.detach().clone()
    trainer.fit(method, DataLoader(data, batch_size=4))
    assert trainer.global_step == 2
    assert not torch.equal(key_before, method.key_encoder.conv1.weight)  # EMA ran after the steps
    out = method.export_encoder(tmp_path / "enc")
    unet = smp.Unet("resnet18", encoder_weights=None)
    torch.nn.Module.load_state_dict(unet.encoder, load_file(str(out / "model.safetensors")), strict=True)
    assert torch.equal(unet.encoder.conv1.weight, method.encoder.conv1.weight.detach())


@pytest.mark.slow
def test_densecl_learns_texture_classes_beyond_random_init_and_chance():
    """Real learning: ~100 CPU steps of DenseCL make nearest-neighbour class agreement (NQC) clearly better.

    Two texture classes (blobs vs stripes, ``synthetic_two_class_images``). The evaluated images carry a
    strong random colour offset per image, which dominates the features of a random encoder; the training
    views get such offsets as augmentation (with crops and flips), so a method that learns anything
    colour-invariant must separate the textures.
    """
    from sslzoo.data.synthetic import synthetic_two_class_images
    from sslzoo.data.transforms import normalize_to_tensor
    from sslzoo.metrics.representation import nqc
    from sslzoo.pretext.base import PretextConfig
    from sslzoo.pretext.registry import get_method

    size, n_images, batch, steps, offset = 32, 64, 16, 100, 1.0
    images, labels = synthetic_two_class_images(n=n_images, size=size, seed=0)
    clean = torch.stack([normalize_to_tensor(image) for image in images])
    generator = torch.Generator().manual_seed(1)
    evaluated = clean + offset * torch.randn(n_images, 3, 1, 1, generator=generator)

    def view(batch_images):
        crops = []
        for image in batch_images:
            side = int(round(size * torch.empty(1).uniform_(0.5, 1.0, generator=generator).item() ** 0.5))
            y0, x0 = (int(torch.randint(0, size - side + 1, (1,), generator=generator)) for _ in range(2))
            crop = F.interpolate(
                image[None, :, y0 : y0 + side, x0 : x0 + side], size=(size, size), mode="bilinear", align_corners=False
            )[0]
            crops.append(crop.flip(2) if torch.rand(1, generator=generator) < 0.5 else crop)
        return torch.stack(crops) + offset * torch.randn(len(crops), 3, 1, 1, generator=generator)

    def agreement(method):
        method.eval()
        with torch.no_grad():
            embeddings = method.embed(evaluated).numpy()
        method.train()
        return nqc(embeddings, labels)

    torch.manual_seed(0)
    config = PretextConfig(
        method="densecl",
        backbone="resnet18",
        input_size=size,
        batch_size=batch,
        samples_per_epoch=n_images,
        # a 100-step run: short-run settings (m 0.9, tau 0.2 as calibrated before the default became 0.07)
        params={"momentum": 0.9, "queue_size": 32, "head_hidden_dim": 256, "temperature": 0.2},
    )
    method = get_method("densecl")(config)
    before = agreement(method)
    optimizer = torch.optim.SGD(
        [p for p in method.parameters() if p.requires_grad], lr=0.03, momentum=0.9, weight_decay=1e-4
    )
    for _ in range(steps):
        index = torch.randperm(n_images, generator=generator)[:batch]
        loss, _ = method.training_loss(view(clean[index]), view(clean[index]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()
    after = agreement(method)
    chance = before.loo_expectation
    print(f"NQC: random init {before.nqc:.3f}, after {steps} DenseCL steps {after.nqc:.3f}, chance {chance:.3f}")
    assert after.nqc >= before.nqc + 0.1, (before.nqc, after.nqc)
    assert after.nqc >= chance + 0.3, (chance, after.nqc)
