"""``sslzoo rank`` core (sslzoo.downstream.rank) and CLI: the read-out maths, determinism, candidates, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sslzoo.errors import ConfigError, DataError, NotFoundError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n: int, size: int = 64, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` RGB images of bright discs on a noisy dark background, with their instance label maps."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        labels = np.zeros((size, size), np.int32)
        for k in range(1, 5):
            cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(4, 8)
            labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = k
        image = rng.normal(40, 10, (size, size, 3))
        image[labels > 0] += 150
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(labels)
    return images, masks


@pytest.fixture(scope="module")
def zeroed_encoder(tmp_path_factory) -> Path:
    """A resnet18 encoder whose weights are all zero: constant features, nothing to read out."""
    import torch

    from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder

    encoder = create_encoder("resnet18")
    with torch.no_grad():
        for p in encoder.parameters():
            p.zero_()
    folder = tmp_path_factory.mktemp("enc") / "zeroed-encoder"
    return save_encoder(encoder, folder, EncoderConfig(backbone="resnet18", method="random", dataset="none"))


@pytest.fixture(autouse=True)
def _no_installed_models(tmp_path, monkeypatch):
    """No packaged defaults and no zoo folder unless a test sets them (fast, independent of the checkout)."""
    empty = tmp_path / "no-defaults"
    empty.mkdir()
    monkeypatch.setenv("SSLZOO_DEFAULTS_DIR", str(empty))
    monkeypatch.delenv("SSLZOO_ZOO_DIR", raising=False)


QUICK = dict(splits=3, pixels_per_image=256, lambdas=(0.01, 1.0))


def test_ridge_read_out_recovers_a_linear_map():
    from sslzoo.downstream.rank import _fit, _image_stats

    rng = np.random.default_rng(0)
    w_true, b_true = rng.normal(size=(6, 2)), np.array([0.5, -1.0])
    stats = []
    for i in range(4):
        x = rng.normal(size=(6, 300)) * np.arange(1, 7)[:, None] + 3.0  # unequal scales and non-zero means
        y = (x.T @ w_true + b_true).reshape(15, 20, 2)
        stats.append(_image_stats(x.astype(np.float32), y, 10_000, np.random.default_rng(i)))
    weights, biases = _fit(stats, [1e-9, 10.0])
    np.testing.assert_allclose(weights[:, 0], w_true, atol=1e-3)
    np.testing.assert_allclose(biases[0], b_true, atol=1e-2)
    assert np.abs(weights[:, 1]).sum() < np.abs(weights[:, 0]).sum()  # a strong ridge shrinks the weights


def test_cell_means_average_each_4x4_cell_and_partial_edge_cells():
    from sslzoo.downstream.rank import cell_means

    values = np.zeros((6, 5))
    values[:4, :4] = 1.0
    values[4:, 4:] = 2.0
    means = cell_means(values)
    assert means.shape == (2, 2)
    np.testing.assert_allclose(means, [[1.0, 0.0], [0.0, 2.0 * 2 / 2 / 1]])  # edge cell (2x1 pixels) all 2


def test_splits_are_seeded_and_hold_out_a_fixed_share():
    from sslzoo.downstream.rank import make_splits

    a, b = make_splits(10, 4, 0.25, seed=3), make_splits(10, 4, 0.25, seed=3)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert [int(m.sum()) for m in a] == [2, 2, 2, 2]
    assert any((x != y).any() for x, y in zip(a, make_splits(10, 4, 0.25, seed=4), strict=True))
    assert int(make_splits(2, 1, 0.9, 0)[0].sum()) == 1  # at least one image always fits


def test_hypercolumns_stack_every_stage_on_the_stride_4_grid(zeroed_encoder):
    from sslzoo.downstream.rank import Candidate, hypercolumns, load_candidate

    encoder = load_candidate(Candidate("random", "random", "baseline"), "resnet18")
    features = hypercolumns(encoder, np.zeros((50, 70, 3), np.uint8))
    assert features.shape == (64 + 64 + 128 + 256 + 512, 13 * 18)
    assert np.isfinite(features).all()
    deep = hypercolumns(encoder, np.zeros((50, 70, 3), np.uint8), first_stage=3)  # layer3 + layer4 only
    assert deep.shape == (256 + 512, 13 * 18)
    np.testing.assert_array_equal(deep, features[64 + 64 + 128 :])


def test_ranking_is_deterministic_under_a_seed_and_ranks_an_informative_encoder_first(zeroed_encoder):
    from sslzoo.downstream.rank import RankSettings, rank_encoders

    images, masks = blobs(8)
    settings = RankSettings(**QUICK, seed=0)
    first = rank_encoders(images, masks, "instance", [str(zeroed_encoder), "random"], settings)
    second = rank_encoders(images, masks, "instance", [str(zeroed_encoder), "random"], settings)
    strip = {"seconds": True, "ranking": {"__all__": {"seconds"}}}
    assert first.model_dump(exclude=strip) == second.model_dump(exclude=strip)
    assert [r.encoder for r in first.ranking] == ["random", "zeroed-encoder"]
    best, worst = first.ranking
    assert best.score > 0.8 and worst.score < 0.2  # bright discs are easy; constant features predict nothing
    assert (
        set(best.proxies) == {"fg_dice", "dist_r2", "aji_plus"} and best.proxies["dist_r2"] > worst.proxies["dist_r2"]
    )
    assert len(best.split_scores) == 3 and best.std == pytest.approx(np.std(best.split_scores, ddof=1))
    assert best.rank == 1 and worst.rank == 2 and best.feature_dim == 1024
    assert first.recommendation.startswith("use random")
    other = rank_encoders(images, masks, "instance", ["random"], RankSettings(**QUICK, seed=1))
    assert other.ranking[0].split_scores != best.split_scores  # the seed draws other splits


def test_semantic_task_uses_the_foreground_dice_and_binarises_masks():
    from sslzoo.downstream.rank import RankSettings, rank_encoders

    images, masks = blobs(6, seed=1)
    ranking = rank_encoders(images, [(m > 0) * 255 for m in masks], "semantic", ["random"], RankSettings(**QUICK))
    assert ranking.proxy == "dice" and list(ranking.ranking[0].proxies) == ["dice"]
    assert ranking.ranking[0].score > 0.8
    assert ranking.warnings and "only 6 labelled images" in ranking.warnings[0]


def test_bad_inputs_are_clear_errors(zeroed_encoder):
    from sslzoo.downstream.rank import RankSettings, rank_encoders

    images, masks = blobs(3)
    settings = RankSettings(**QUICK)
    with pytest.raises(DataError, match="differs from its image"):
        rank_encoders(images, [masks[0][:-1], *masks[1:]], "semantic", ["random"], settings)
    with pytest.raises(DataError, match="at least 2"):
        rank_encoders(images[:1], masks[:1], "semantic", ["random"], settings)
    with pytest.raises(DataError, match="3 image.*2 mask"):
        rank_encoders(images, masks[:2], "semantic", ["random"], settings)
    with pytest.raises(DataError, match="every mask is empty"):
        rank_encoders(images, [np.zeros_like(m) for m in masks], "semantic", ["random"], settings)
    with pytest.raises(ConfigError, match="unknown task"):
        rank_encoders(images, masks, "panoptic", ["random"], settings)
    with pytest.raises(NotFoundError, match="unknown encoder 'simclr-resnet18-nowhere'.*available here: random"):
        rank_encoders(images, masks, "semantic", ["simclr-resnet18-nowhere"], settings)
    with pytest.raises(NotFoundError, match="unknown encoder"):  # a path is not allowed where clients name encoders
        rank_encoders(images, masks, "semantic", [str(zeroed_encoder)], settings, allow_paths=False)
    with pytest.raises(ConfigError, match="segmenter"):
        rank_encoders(images, masks, "semantic", ["densecl-resnet18-monuseg-instance"], settings)
    with pytest.raises(ConfigError, match="proxy 'dist_r2'"):
        rank_encoders(images, masks, "semantic", ["random"], RankSettings(**QUICK, proxy="dist_r2"))


def test_candidates_are_packaged_then_zoo_folder_then_random(tmp_path, monkeypatch, zeroed_encoder):
    import shutil

    from sslzoo.downstream.rank import available_encoders, resolve_candidates

    defaults, zoo = tmp_path / "defaults", tmp_path / "zoo"
    shutil.copytree(zeroed_encoder, defaults / "simclr-resnet18-monuseg")
    shutil.copytree(zeroed_encoder, zoo / "byol-resnet18-isic2017")
    shutil.copytree(zeroed_encoder, zoo / "simclr-resnet18-monuseg")  # shadowed by the packaged one
    (zoo / "moco-resnet18-isic2017" / "work").mkdir(parents=True)  # unfinished build: not a candidate
    shutil.copy(zeroed_encoder / "model.safetensors", zoo / "moco-resnet18-isic2017")
    monkeypatch.setenv("SSLZOO_DEFAULTS_DIR", str(defaults))
    monkeypatch.setenv("SSLZOO_ZOO_DIR", str(zoo))
    found = [(c.name, c.source) for c in available_encoders()]
    assert found == [
        ("simclr-resnet18-monuseg", "packaged"),
        ("byol-resnet18-isic2017", "zoo-folder"),
        ("random", "baseline"),
    ]
    assert [c.name for c in resolve_candidates(["all"])] == [name for name, _ in found]
    assert [c.source for c in resolve_candidates(["byol-resnet18-isic2017", "random"])] == ["zoo-folder", "baseline"]
    with pytest.raises(ConfigError, match="named twice"):
        resolve_candidates(["random", "random"])


def test_rank_folder_cli_json_table_and_plot(tmp_path, zeroed_encoder, capsys):
    from sslzoo.cli import main
    from sslzoo.data.io import write_image, write_label_map

    images, masks = blobs(6, seed=2)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        write_image(tmp_path / "data" / "train" / "images" / f"img{i}.png", image)
        write_label_map(tmp_path / "data" / "train" / "masks" / f"img{i}.png", mask)
    args = ["rank", "--data", str(tmp_path / "data"), "--task", "instance", "--budget", "quick", "--encoders"]
    assert main([*args, "random", str(zeroed_encoder), "--json", "--plot", str(tmp_path / "bars.png")]) == 0
    out = capsys.readouterr().out
    ranking = json.loads(out)
    assert [r["encoder"] for r in ranking["ranking"]] == ["random", "zeroed-encoder"]
    assert {"task", "n_images", "ranking", "recommendation", "seconds"} <= set(ranking)
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args, "random", "--splits", "2"]) == 0
    table = capsys.readouterr().out
    assert "recommendation: only one encoder" in table and "over 2 splits of 6 images" in table
    (tmp_path / "plain").mkdir()
    write_image(tmp_path / "plain" / "a.png", images[0])
    assert main(["rank", "--data", str(tmp_path / "plain"), "--task", "semantic"]) == 2
    assert "no masks found" in capsys.readouterr().err


def test_recommendation_says_when_the_lead_is_clear_close_or_random():
    from sslzoo.downstream.rank import EncoderScore, recommendation_text

    def row(name: str, rank: int, scores: list[float], method: str = "simclr") -> EncoderScore:
        return EncoderScore(
            encoder=name, rank=rank, score=float(np.mean(scores)), std=float(np.std(scores, ddof=1)),
            split_scores=scores, proxies={}, ridge_lambda=1.0, source="zoo-folder", backbone="resnet18",
            method=method, dataset="x", feature_dim=1024, seconds=0.0,
        )  # fmt: skip

    a, b, r = [0.8, 0.82, 0.81], [0.7, 0.71, 0.69], [0.79, 0.83, 0.80]
    clear = recommendation_text("semantic", [row("a", 1, a), row("b", 2, b)], {"a": a, "b": b})
    assert clear.startswith("use a (score 0.810") and "in 3 of 3 splits" in clear
    close = recommendation_text("semantic", [row("a", 1, a), row("random", 2, r, "random")], {"a": a, "random": r})
    assert "are close" in close and "random init is close behind" in close
    worst = recommendation_text("semantic", [row("random", 1, a, "random"), row("b", 2, b)], {"random": a, "b": b})
    assert worst.endswith("no pretrained encoder beats random init on these images")


def test_split_agreement_is_one_for_identical_orders_minus_one_for_reversed_and_none_when_undefined():
    from sslzoo.downstream.rank import split_agreement

    same = {"a": [0.9, 0.8, 0.7], "b": [0.5, 0.4, 0.3], "c": [0.1, 0.2, 0.0]}
    assert split_agreement(same) == pytest.approx(1.0)
    reversed_ = {"a": [0.9, 0.1], "b": [0.5, 0.5], "c": [0.1, 0.9]}
    assert split_agreement(reversed_) == pytest.approx(-1.0)
    # split 2 scores every encoder alike (no order): only the pair (1, 3) counts
    assert split_agreement({"a": [0.9, 0.5, 0.8], "b": [0.5, 0.5, 0.4], "c": [0.1, 0.5, 0.6]}) == pytest.approx(0.5)
    assert split_agreement({"a": [0.9, 0.1], "b": [0.5, 0.5]}) is None  # 2 encoders: no rank correlation
    assert split_agreement({"a": [0.9], "b": [0.5], "c": [0.1]}) is None  # one split
    assert split_agreement({"a": [0.5, 0.5], "b": [0.5, 0.5], "c": [0.5, 0.5]}) is None


def test_a_ranking_whose_splits_disagree_says_so_in_a_warning_and_the_cli_prints_the_agreement(
    zeroed_encoder, monkeypatch, tmp_path
):
    import io

    import torch

    import sslzoo.downstream.rank as rank
    from sslzoo.cli.rank import print_table
    from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder

    torch.manual_seed(5)
    other = save_encoder(
        create_encoder("resnet18"),
        tmp_path / "other-encoder",
        EncoderConfig(backbone="resnet18", method="random", dataset="none"),
    )
    images, masks = blobs(8)
    settings = rank.RankSettings(**QUICK, seed=0)
    encoders = [str(zeroed_encoder), "random", str(other)]
    stable = rank.rank_encoders(images, masks, "instance", encoders, settings)
    assert stable.split_agreement is not None and -1.0 <= stable.split_agreement <= 1.0
    seen: list[dict] = []

    def disagreeing(per_split: dict[str, list[float]]) -> float:
        seen.append(per_split)
        return 0.1

    monkeypatch.setattr(rank, "split_agreement", disagreeing)
    noisy = rank.rank_encoders(images, masks, "instance", encoders, settings)
    assert noisy.split_agreement == 0.1 and any(
        "order the encoders alike only at Spearman 0.10" in w for w in noisy.warnings
    )
    assert all(len(scores) == 3 for scores in seen[0].values())  # one score per split and encoder
    flagged = any("order the encoders alike" in w for w in stable.warnings)
    assert flagged == (stable.split_agreement < rank.UNSTABLE_AGREEMENT)
    out = io.StringIO()
    print_table(noisy, out)
    assert "split agreement: 0.10" in out.getvalue() and "warning: the 3 splits order" in out.getvalue()


def test_an_encoder_with_overflowed_weights_is_ranked_last_with_a_warning_instead_of_crashing(tmp_path):
    """inf in a batch-norm buffer (float16 overflow) gives inf/NaN features: the ridge must not fail on them."""
    import torch

    from sslzoo.downstream.rank import RankSettings, rank_encoders
    from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder

    torch.manual_seed(0)
    encoder = create_encoder("resnet18")
    encoder.layer3[0].bn1.running_var.fill_(float("inf"))
    encoder.layer3[0].bn1.running_mean.fill_(float("inf"))
    broken = save_encoder(
        encoder, tmp_path / "broken-encoder", EncoderConfig(backbone="resnet18", method="random", dataset="none")
    )
    images, masks = blobs(8)
    ranking = rank_encoders(images, masks, "instance", [str(broken), "random"], RankSettings(**QUICK, seed=0))
    assert [r.encoder for r in ranking.ranking] == ["random", "broken-encoder"]
    assert all(np.isfinite(r.score) for r in ranking.ranking)
    assert any("non-finite features (inf/NaN) from broken-encoder (8/8 images)" in w for w in ranking.warnings)


def test_finetune_probe_is_deterministic_and_ranks_an_informative_encoder_first(zeroed_encoder):
    """probe=finetune: the same seed gives the same ranking; a random encoder's features let the decoder find the
    bright discs, an all-zero encoder's do not; the folds hold out every image once."""
    from sslzoo.downstream.rank import RankSettings, make_folds, rank_encoders

    images, masks = blobs(6)
    settings = RankSettings.from_budget("quick", probe="finetune", splits=2, finetune_steps=25, seed=0)
    assert settings.finetune_steps == 25 and settings.splits == 2
    first = rank_encoders(images, masks, "semantic", [str(zeroed_encoder), "random"], settings)
    second = rank_encoders(images, masks, "semantic", [str(zeroed_encoder), "random"], settings)
    strip = {"seconds": True, "ranking": {"__all__": {"seconds"}}}
    assert first.model_dump(exclude=strip) == second.model_dump(exclude=strip)
    assert first.probe == "finetune" and first.proxy == "finetune_dice" and first.test_images_per_split == 3
    assert [r.encoder for r in first.ranking] == ["random", "zeroed-encoder"]
    best, worst = first.ranking
    assert best.score > worst.score + 0.2 and best.ridge_lambda is None and len(best.split_scores) == 2
    assert worst.proxies["finetune_loss"] < best.proxies["finetune_loss"] < 0.0  # minus the held-out Dice loss
    # learning speed: the decoder fits a random encoder's features faster than an all-zero encoder's
    assert worst.proxies["finetune_train_loss"] < best.proxies["finetune_train_loss"] < 0.0
    folds = make_folds(7, 3, seed=1)
    assert np.array_equal(np.sum(folds, axis=0), np.ones(7)) and sorted(int(f.sum()) for f in folds) == [2, 2, 3]


def test_finetune_probe_instance_scores_aji_plus_and_rejects_readout_proxies():
    from sslzoo.downstream.rank import RankSettings, rank_encoders

    images, masks = blobs(4)
    settings = RankSettings(probe="finetune", splits=2, finetune_steps=2)
    ranking = rank_encoders(images, masks, "instance", ["random"], settings)
    assert ranking.proxy == "finetune_aji_plus" and set(ranking.ranking[0].proxies) == {
        "finetune_aji_plus",
        "finetune_dice",
        "finetune_loss",
        "finetune_train_loss",
    }
    assert 0.0 <= ranking.ranking[0].score <= 1.0
    with pytest.raises(ConfigError, match="proxies of probe finetune"):
        rank_encoders(images, masks, "instance", ["random"], settings.model_copy(update={"proxy": "dist_r2"}))
    with pytest.raises(ConfigError, match="proxies of probe readout"):
        rank_encoders(images, masks, "instance", ["random"], RankSettings(proxy="finetune_dice"))


def test_cli_proxy_choices_are_the_proxies_of_the_api():
    """The CLI lists its --proxy choices without importing torch; they must stay the API's Proxy names."""
    from typing import get_args

    from sslzoo.cli.rank import PROXY_NAMES
    from sslzoo.downstream.rank import FINETUNE_PROXIES, PROXIES, Proxy

    assert set(PROXY_NAMES) == set(get_args(Proxy))
    assert set(PROXY_NAMES) == {p for table in (PROXIES, FINETUNE_PROXIES) for names in table.values() for p in names}
