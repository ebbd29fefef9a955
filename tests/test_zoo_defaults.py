"""The embedded default models in ``sslzoo/zoo/``: present, compact, carded, and working on real samples.

The sample crops shipped in ``sslzoo/samples`` come from the datasets' training splits (one MoNuSeg crop lies in
the nuclei model's held-out images, the others were trained on), so the score floors
below are a check that packaging (fp16 weights, configs, resize/tiling settings) kept each model
working, not a quality claim; the held-out scores are measured once and recorded in the cards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open

from sslzoo.cli import main
from sslzoo.data.datasets import open_dataset
from sslzoo.data.io import read_image, read_label_map, write_image
from sslzoo.data.samples import sample_dataset_path
from sslzoo.hub import defaults, load_encoder, load_segmenter
from sslzoo.hub.cards import licence_for
from sslzoo.metrics.segmentation import aji_plus, dice

ALIASES = ("nuclei", "lesion", "embed")


@pytest.fixture(autouse=True)
def _packaged_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(defaults.DEFAULTS_ENV, raising=False)  # the folder shipped in the package


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _samples(kind: str):
    index = open_dataset(sample_dataset_path(kind))
    return [(index.read_image(s), index.read_mask(s)) for s in index.labelled()]


@pytest.mark.parametrize("alias", ALIASES)
def test_every_alias_is_embedded_compact_and_carded(alias: str) -> None:
    folder = defaults.require_default(alias)
    assert folder.name == defaults.ALIAS_TARGETS[alias] and folder.parent == defaults.PACKAGED_DEFAULTS_DIR
    weights = folder / "model.safetensors"
    assert weights.stat().st_size < 35e6  # a compact backbone in fp16: tens of MB at most
    with safe_open(str(weights), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert "F16" in dtypes and "F32" not in dtypes
    assert not (folder / "checkpoints").exists() and not (folder / "result.json").exists()

    card = ModelCard.load(str(folder / "README.md"))
    dataset = card.data.datasets[0]
    assert card.data.license == licence_for(dataset)
    assert "How this model was made" in card.text and "Not for clinical use" in card.text
    if alias != "embed":
        results = card.data.eval_results
        assert results, "segmenter cards carry their held-out scores in model-index"
        assert all(0.0 < r.metric_value <= 1.0 for r in results)
    packaged_card = defaults.PACKAGED_DEFAULTS_DIR.parents[1] / "model_cards" / f"{folder.name}.md"
    if packaged_card.parent.is_dir():  # a source checkout: the repository's copy of the card is the same
        assert packaged_card.read_text() == (folder / "README.md").read_text()


def test_nuclei_default_separates_nuclei_on_the_monuseg_samples() -> None:
    segmenter = load_segmenter("nuclei")
    assert next(segmenter.model.parameters()).dtype == torch.float32
    for image, truth in _samples("monuseg"):
        labels = segmenter.predict(image)
        assert labels.shape == truth.shape
        n_pred, n_true = len(np.unique(labels)) - 1, len(np.unique(truth)) - 1
        assert 0.6 * n_true <= n_pred <= 1.4 * n_true, (n_pred, n_true)
        assert aji_plus(labels, truth) >= 0.45


def test_lesion_default_finds_the_lesions_of_the_isic_samples() -> None:
    segmenter = load_segmenter("lesion")
    assert segmenter.config.resize_to is not None  # dermoscopy images are squeezed whole, as in training
    scores = [dice(segmenter.predict(image), truth > 0) for image, truth in _samples("isic2017")]
    assert np.mean(scores) >= 0.75, scores


def test_embed_default_gives_float32_features() -> None:
    encoder, config = load_encoder("embed")
    image, _ = _samples("monuseg")[0]
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        features = encoder(x)
    assert features[-1].dtype == torch.float32 and features[-1].shape[1] == config.out_channels[-1]
    assert torch.isfinite(features[-1]).all()


def test_predict_cli_keeps_the_size_of_large_and_non_square_inputs(tmp_path) -> None:
    """``sslzoo predict --model nuclei`` on a 1000x1000 H&E tile, ``--model lesion`` on a 450x600 JPEG."""
    crop = _samples("monuseg")[0][0]
    he = np.pad(crop, ((0, 1000 - crop.shape[0]), (0, 1000 - crop.shape[1]), (0, 0)), mode="reflect")
    write_image(tmp_path / "he.png", he)
    lesion = read_image(next((sample_dataset_path("isic2017") / "train" / "images").glob("*.jpg")))
    import cv2

    write_image(tmp_path / "derm.jpg", cv2.resize(lesion, (600, 450), interpolation=cv2.INTER_LINEAR))

    assert main(["predict", "--model", "nuclei", str(tmp_path / "he.png"), "--out", str(tmp_path / "n")]) == 0
    nuclei = read_label_map(tmp_path / "n" / "he.png")
    assert nuclei.shape == (1000, 1000) and nuclei.max() > 50
    assert main(["predict", "--model", "lesion", str(tmp_path / "derm.jpg"), "--out", str(tmp_path / "l")]) == 0
    mask = read_label_map(tmp_path / "l" / "derm.png")
    assert mask.shape == (450, 600) and 0.02 < (mask > 0).mean() < 0.98


def test_serve_builds_its_model_store_from_the_embedded_defaults(tmp_path) -> None:
    from sslzoo.serving.modelstore import build_model_store, default_models

    served = build_model_store(default_models(), tmp_path / "store")
    assert set(served) == {"nuclei", "lesion", "embed", "evaluate", "rank"}
    for alias in ALIASES:  # copied as stored: the fp16 files, not a float32 re-save
        copied = next((tmp_path / "store" / alias).rglob("model.safetensors"))
        assert copied.read_bytes() == (defaults.require_default(alias) / "model.safetensors").read_bytes()
