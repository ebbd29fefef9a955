"""CKA (unbiased HSIC, minibatch, encoder stages), embeddings and NQC, and their commands."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math

import numpy as np
import pytest
import torch

from sslzoo.cli import main
from sslzoo.errors import ConfigError, DataError
from sslzoo.metrics.representation import (
    MinibatchCKA,
    StageCapture,
    class_expectations,
    embed_images,
    encoder_stage_cka,
    gram_linear,
    hsic_unbiased,
    linear_cka_unbiased,
    nqc,
)


def _hsic_u_statistic(k: np.ndarray, l: np.ndarray) -> float:
    """HSIC as the U-statistic of Song et al. (2012), by brute force over index tuples (distinct indices):

    (n)_2^-1 Σ k_ij l_ij + (n)_4^-1 Σ k_ij l_qr - 2 (n)_3^-1 Σ k_ij l_iq
    """
    n = k.shape[0]
    pairs = list(itertools.permutations(range(n), 2))
    triples = list(itertools.permutations(range(n), 3))
    quads = list(itertools.permutations(range(n), 4))
    term1 = sum(k[i, j] * l[i, j] for i, j in pairs) / len(pairs)
    term2 = sum(k[i, j] * l[q, r] for i, j, q, r in quads) / len(quads)
    term3 = sum(k[i, j] * l[i, q] for i, j, q in triples) / len(triples)
    return term1 + term2 - 2.0 * term3


def _cka_naive(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T
    return _hsic_u_statistic(k, l) / math.sqrt(_hsic_u_statistic(k, k) * _hsic_u_statistic(l, l))


@functools.cache
def _encoder(seed: int):
    """A random resnet18 smp encoder, built once per seed (tests only switch its train/eval mode)."""
    from segmentation_models_pytorch.encoders import get_encoder

    torch.manual_seed(seed)
    return get_encoder("resnet18", in_channels=3, depth=5, weights=None)


def _all_forward_hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


# ------------------------------------------------------------------------------------------------ HSIC / CKA


def test_unbiased_hsic_equals_brute_force_u_statistic():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(7, 3))
    k, l = x @ x.T, y @ y.T
    fast = hsic_unbiased(torch.from_numpy(k), torch.from_numpy(l))
    assert fast == pytest.approx(_hsic_u_statistic(k, l), rel=1e-10, abs=1e-12)
    assert linear_cka_unbiased(x, y) == pytest.approx(_cka_naive(x, y), rel=1e-9)


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 6)) + 0.5 * rng.normal(size=(20, 1))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    base = linear_cka_unbiased(x, y)
    assert linear_cka_unbiased(x @ q * 3.7, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka_unbiased(x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka_unbiased(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    # not invariant to an anisotropic rescaling of the features
    assert linear_cka_unbiased(x * np.linspace(0.1, 10, 8), y) != pytest.approx(base, abs=1e-3)


def test_cka_of_constant_features_is_nan_and_small_batches_are_rejected():
    rng = np.random.default_rng(2)
    assert math.isnan(linear_cka_unbiased(np.ones((6, 3)), rng.normal(size=(6, 2))))
    with pytest.raises(ConfigError):
        linear_cka_unbiased(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))
    with pytest.raises(ConfigError):
        MinibatchCKA(3)


def test_gram_linear_flattens_and_matches_float64_product():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 2, 3, 4)).astype(np.float32)
    flat = x.reshape(5, -1).astype(np.float64)
    assert np.allclose(gram_linear(torch.from_numpy(x)).numpy(), flat @ flat.T, rtol=1e-5)


def test_minibatch_cka_averages_hsic_over_full_batches_and_drops_the_partial_one():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(10, 6)), rng.normal(size=(10, 4)) + rng.normal(size=(10, 1))
    acc = MinibatchCKA(4)
    for start in range(0, 10, 3):  # uneven chunks: 3, 3, 3, 1
        acc.update(torch.from_numpy(x[start : start + 3]), torch.from_numpy(y[start : start + 3]))
    assert acc.n_batches == 2 and acc.n_samples == 8 and acc.n_dropped == 2

    terms = []
    for sl in (slice(0, 4), slice(4, 8)):
        k = torch.from_numpy(x[sl] @ x[sl].T)
        l = torch.from_numpy(y[sl] @ y[sl].T)
        terms.append((hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)))
    xy, xx, yy = np.mean(terms, axis=0)
    assert acc.compute() == pytest.approx(xy / math.sqrt(xx * yy), rel=1e-9)
    # the 2 leftover rows change nothing
    assert acc.compute() != pytest.approx(linear_cka_unbiased(x, y), abs=1e-6)

    empty = MinibatchCKA(8)
    empty.update(torch.from_numpy(x[:5]), torch.from_numpy(y[:5]))
    with pytest.raises(DataError, match="no full minibatch"):
        empty.compute()


# ------------------------------------------------------------------------------------------------ encoders


def test_stage_capture_matches_the_smp_feature_pyramid_and_removes_hooks():
    encoder = _encoder(0).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pyramid = encoder(images)
        with StageCapture(encoder, (1, 2, 3, 4)) as capture:
            assert _all_forward_hooks(encoder) == 4
            captured = capture.run(images)
    assert _all_forward_hooks(encoder) == 0
    for stage in (1, 2, 3, 4):  # stage k = layer<k> = pyramid[k + 1] (pyramid: [x, stem, layer1..layer4])
        assert torch.equal(captured[stage], pyramid[stage + 1])


def test_encoder_stage_cka_self_is_one_and_differs_between_random_inits():
    encoder_a, encoder_b = _encoder(0), _encoder(1)
    encoder_a.train()
    torch.manual_seed(5)
    images = [torch.randn(4, 3, 32, 32) for _ in range(2)] + [torch.randn(2, 3, 32, 32)]  # last batch partial

    self_cka = encoder_stage_cka(encoder_a, encoder_a, images, stages=(1, 2, 3, 4))
    assert sorted(self_cka) == [1, 2, 3, 4]
    for value in self_cka.values():
        assert value == pytest.approx(1.0, abs=1e-9)
    assert encoder_a.training  # mode restored
    assert _all_forward_hooks(encoder_a) == 0

    cross = encoder_stage_cka(encoder_a, encoder_b, images, stages=(1, 4))
    assert _all_forward_hooks(encoder_b) == 0
    assert all(-1.0 <= v < 0.999 for v in cross.values())

    # same numbers as CKA computed by hand on the pyramid features, partial batch dropped
    encoder_a.eval()
    encoder_b.eval()
    with torch.no_grad():
        acc = MinibatchCKA(4)
        for batch in images:
            acc.update(encoder_a(batch)[5], encoder_b(batch)[5])  # stage 4 = layer4 = pyramid[5]
    assert cross[4] == pytest.approx(acc.compute(), rel=1e-9)


def test_table_iii_stages_are_layer1_to_layer4_against_one_reference():
    """Issue 12, defect 3: Table III measures layer1..layer4 (Conv1..Conv4; the authors' backbone.1..4), and every
    method is compared with ONE reference network, not with its own fine-tuned self."""
    from sslzoo.metrics.representation import TABLE_III_STAGES, reference_stage_cka, stage_module

    encoder = _encoder(0)
    assert TABLE_III_STAGES == (1, 2, 3, 4)
    assert [stage_module(encoder, k) for k in TABLE_III_STAGES] == [
        encoder.layer1,
        encoder.layer2,
        encoder.layer3,
        encoder.layer4,
    ]
    reference, other = _encoder(1), _encoder(2)
    torch.manual_seed(3)
    images = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    table = reference_stage_cka({"a": encoder, "same": reference, "b": other}, reference, images, batch_size=4)
    assert set(table) == {"a", "same", "b"} and all(sorted(row) == [1, 2, 3, 4] for row in table.values())
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in table["same"].values())  # the reference itself
    assert all(v < 0.999 for v in table["a"].values())
    assert table["a"][4] == pytest.approx(encoder_stage_cka(encoder, reference, images, (4,))[4], rel=1e-12)
    with pytest.raises(ConfigError, match="one-shot"):
        reference_stage_cka({"a": encoder}, reference, iter(images))


def test_encoder_stage_cka_removes_hooks_after_an_error():
    encoder = _encoder(0)
    with pytest.raises(DataError):
        encoder_stage_cka(encoder, encoder, [torch.randn(2, 3, 32, 32)], batch_size=4)
    assert _all_forward_hooks(encoder) == 0


def test_embed_images_is_gap_of_last_stage():
    encoder = _encoder(0)
    batches = [(torch.randn(3, 3, 32, 32), torch.zeros(3)), (torch.randn(2, 3, 32, 32), torch.zeros(2))]
    embeddings = embed_images(encoder, batches)
    assert embeddings.shape == (5, 512)
    with torch.no_grad():
        expected = encoder.eval()(batches[1][0])[-1].mean(dim=(2, 3)).numpy()
    assert np.allclose(embeddings[3:], expected, atol=1e-5)


# ------------------------------------------------------------------------------------------------ NQC


def test_nqc_expectations_for_isic_test_class_counts():
    labels = ["nevus"] * 393 + ["melanoma"] * 117 + ["seborrheic_keratosis"] * 90
    random_expectation, loo_expectation = class_expectations(labels)
    assert abs(random_expectation - 0.4895) < 1e-4  # the paper's 0.49
    assert random_expectation == pytest.approx((117**2 + 90**2 + 393**2) / 600**2, rel=1e-12)
    assert loo_expectation == pytest.approx((117 * 116 + 90 * 89 + 393 * 392) / (600 * 599), rel=1e-12)
    assert loo_expectation < random_expectation


def test_nqc_is_one_on_separated_clusters_and_never_picks_self():
    rng = np.random.default_rng(6)
    centres = rng.normal(scale=50.0, size=(3, 32))
    labels = np.repeat(["a", "b", "c"], 15)
    embeddings = centres[np.repeat([0, 1, 2], 15)] + rng.normal(size=(45, 32))
    result = nqc(embeddings, labels)
    assert result.nqc == 1.0
    assert result.n_components == 10
    assert not np.any(result.nearest_index == np.arange(45))
    assert not np.any(result.farthest_index == np.arange(45))
    assert np.all(labels[result.farthest_index] != labels)
    assert result.random_expectation == pytest.approx(1 / 3)
    assert result.class_counts == {"a": 15, "b": 15, "c": 15}


def test_nqc_counts_neighbours_of_other_classes():
    # points on a line: 0, 1, 10, 11, 20, 21 ; nearest pairs (0,1) (10,11) (20,21)
    embeddings = np.array([[0.0], [1.0], [10.0], [11.0], [20.0], [21.5]])
    labels = ["x", "x", "x", "y", "y", "y"]  # pair (10, 11) disagrees
    result = nqc(embeddings, labels, n_components=10)
    assert result.n_components == 1
    assert result.nearest_index.tolist() == [1, 0, 3, 2, 5, 4]
    assert result.farthest_index.tolist() == [5, 5, 5, 0, 0, 0]
    assert result.nqc == pytest.approx(4 / 6)


def test_nqc_rejects_bad_input():
    with pytest.raises(DataError, match="labels"):
        nqc(np.zeros((4, 3)), ["a", "b"])
    with pytest.raises(DataError, match="NaN"):
        nqc(np.full((4, 3), np.nan), ["a", "b", "a", "b"])


# ------------------------------------------------------------------------------------------------ commands


def _tiny_dataset(root, n=8, size=40):
    """A dataset in the shared layout: labels.csv + <split>/images + <split>/masks."""
    from sslzoo.data.io import write_image, write_label_map

    rng = np.random.default_rng(7)
    rows = []
    for i in range(n):
        sample_id = f"IMG_{i:04d}"
        label = "melanoma" if i % 2 else "nevus"
        colour = np.array([200, 60, 60] if i % 2 else [60, 60, 200], dtype=np.uint8)
        image = np.clip(colour + rng.normal(scale=20, size=(size, size, 3)), 0, 255).astype(np.uint8)
        write_image(root / "val" / "images" / f"{sample_id}.png", image)
        mask = np.zeros((size, size), np.uint8)
        mask[10:30, 10:30] = 255
        write_label_map(root / "val" / "masks" / f"{sample_id}.png", mask)
        rows.append({"id": sample_id, "split": "val", "class": label})
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "split", "class"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_compare_encoders_command_prints_json(tmp_path, capsys):
    data = _tiny_dataset(tmp_path / "data")
    code = main(
        [
            "compare-encoders",
            "random",
            "random",
            "--data",
            str(data),
            "--backbone",
            "resnet18",
            "--batch-size",
            "4",
            "--size",
            "32",
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["cka"]) == {"Conv1", "Conv2", "Conv3", "Conv4"}
    assert result["n_images"] == 8 and result["n_dropped"] == 0
    assert all(-1.0 <= v <= 1.0 for v in result["cka"].values())
    assert result["mean"] == pytest.approx(np.mean(list(result["cka"].values())))


def test_compare_encoders_command_rejects_too_few_images(tmp_path, capsys):
    data = _tiny_dataset(tmp_path / "data", n=3)
    assert (
        main(
            [
                "compare-encoders",
                "random",
                "random",
                "--data",
                str(data),
                "--backbone",
                "resnet18",
                "--batch-size",
                "4",
                "--size",
                "32",
            ]
        )
        == 2
    )
    assert "cannot fill one CKA minibatch" in capsys.readouterr().err


def test_neighbours_command_reports_nqc_and_writes_grid(tmp_path, capsys):
    data = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "grid.png"
    code = main(
        [
            "neighbours",
            "random",
            "--data",
            str(data),
            "--backbone",
            "resnet18",
            "--size",
            "32",
            "--out",
            str(out),
            "--queries",
            "2",
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 8
    assert result["class_counts"] == {"melanoma": 4, "nevus": 4}
    assert result["random_expectation"] == pytest.approx(0.5)
    assert result["loo_expectation"] == pytest.approx(2 * 4 * 3 / (8 * 7))
    assert 0.0 <= result["nqc"] <= 1.0
    from PIL import Image

    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.height > grid.width / 3


def test_neighbours_without_labels_is_a_clear_error(tmp_path, capsys):
    from sslzoo.data.io import write_image

    folder = tmp_path / "plain"
    for i in range(3):
        write_image(folder / f"img{i}.png", np.full((16, 16, 3), 40 * i, np.uint8))
    assert main(["neighbours", "random", "--data", str(folder), "--dataset", "folder", "--backbone", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "labels" in err


@pytest.mark.shared_data
def test_neighbours_on_real_isic_images(shared_data, capsys):
    code = main(
        [
            "neighbours",
            "random",
            "--data",
            str(shared_data / "isic2017"),
            "--dataset",
            "isic2017",
            "--split",
            "val",
            "--backbone",
            "resnet18",
            "--size",
            "32",
            "--max-images",
            "12",
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 12
    assert set(result["class_counts"]) <= {"melanoma", "nevus", "seborrheic_keratosis"}


def test_stage_means_labels_stages_like_table_iii():
    from sslzoo.metrics.representation import stage_means

    row = stage_means({2: 0.5, 1: 0.9, 3: math.nan, 4: 0.7})
    assert list(row) == ["Conv1", "Conv2", "Conv3", "Conv4", "mean"]
    assert row["mean"] == pytest.approx((0.9 + 0.5 + 0.7) / 3)
    assert math.isnan(stage_means({1: math.nan})["mean"])


def test_select_samples_filters_labels_and_draws_a_seeded_subset(tmp_path):
    from sslzoo.metrics.representation import select_samples

    data = _tiny_dataset(tmp_path / "data", n=10)
    _, all_samples = select_samples(data, split="val", labelled=True)
    assert len(all_samples) == 10
    _, first = select_samples(data, max_images=4, seed=3)
    _, again = select_samples(data, max_images=4, seed=3)
    assert [s.id for s in first] == [s.id for s in again] == sorted(s.id for s in first)
    with pytest.raises(ConfigError):
        select_samples(data, max_images=0)
