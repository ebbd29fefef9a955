"""Model cards: ``README.md`` of a zoo repo, from its config and (optionally) evaluation results.

Built with ``huggingface_hub``'s :class:`ModelCard` / :class:`ModelCardData` on the template
``card_template.md`` (also ``model_cards/template.md`` in a checkout). The YAML metadata holds
``library_name``, ``license`` (the training data's: MoNuSeg CC BY-NC-SA 4.0 -> ``cc-by-nc-sa-4.0``,
ISIC 2017 and DSB 2018 CC0 -> ``cc0-1.0``), ``tags``, ``datasets``, ``metrics``, ``pipeline_tag``
(``image-feature-extraction`` for encoders, ``image-segmentation`` for segmenters), ``base_model``
and, when results are given, a ``model-index``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslzoo.errors import DataError
from sslzoo.hub.names import hub_namespace, is_zoo_name
from sslzoo.hub.registry import DATASET_LICENCES
from sslzoo.vocabulary import METHODS as SSL_METHODS
from sslzoo.vocabulary import NAMED_DATASETS, encoder_name

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from sslzoo.models.encoders import EncoderConfig
    from sslzoo.models.segmenter import SegmenterConfig

TEMPLATE_PATH = Path(__file__).with_name("card_template.md")
CARD_FILE = "README.md"
LIBRARY_NAME = "sslzoo"

PAPER_CITATION = """@article{rettenberger2023ssl,
  author  = {Rettenberger, Luca and Schilling, Marcel and Elser, Stefan and B{\\"o}hland, Moritz and Reischl, Markus},
  title   = {Self-Supervised Learning for Annotation Efficient Biomedical Image Segmentation},
  journal = {IEEE Transactions on Biomedical Engineering},
  volume  = {70},
  number  = {9},
  pages   = {2519--2528},
  year    = {2023},
  note    = {PMID: 37028023}
}"""


@dataclass(frozen=True)
class DatasetCard:
    """What a card says about a training data set (facts from the data's SOURCE.md)."""

    title: str
    description: str
    url: str
    licence_text: str
    microns_per_pixel: str
    citation: str


DATASETS: dict[str, DatasetCard] = {
    "monuseg": DatasetCard(
        title="MoNuSeg 2018",
        description="H&E-stained tissue tiles (1000x1000, 40x, TCGA) of several organs with nucleus instance "
        "annotations (Multi-Organ Nucleus Segmentation Challenge, MICCAI 2018).",
        url="https://monuseg.grand-challenge.org/",
        licence_text="CC BY-NC-SA 4.0 (non-commercial, share-alike), images from TCGA",
        microns_per_pixel="about 0.25 µm per pixel (40x scans); rescale other magnifications to it",
        citation="""@article{kumar2017monuseg,
  author  = {Kumar, Neeraj and Verma, Ruchika and Sharma, Sanuj and Bhargava, Surabhi and
             Vahadane, Abhishek and Sethi, Amit},
  title   = {A Dataset and a Technique for Generalized Nuclear Segmentation for Computational Pathology},
  journal = {IEEE Transactions on Medical Imaging},
  volume  = {36},
  number  = {7},
  pages   = {1550--1560},
  year    = {2017}
}
@article{kumar2020monuseg,
  author  = {Kumar, Neeraj and others},
  title   = {A Multi-Organ Nucleus Segmentation Challenge},
  journal = {IEEE Transactions on Medical Imaging},
  volume  = {39},
  number  = {5},
  pages   = {1380--1391},
  year    = {2020}
}""",
    ),
    "isic2017": DatasetCard(
        title="ISIC 2017",
        description="Dermoscopic images of skin lesions with binary lesion masks (ISIC 2017 challenge, part 1), "
        "squeezed to 256x256.",
        url="https://challenge.isic-archive.com/landing/2017/",
        licence_text="CC0 1.0 (ISIC Archive)",
        microns_per_pixel="not defined (dermoscopy; whole image squeezed to 256x256, aspect ratio not kept)",
        citation="""@inproceedings{codella2018isic,
  author    = {Codella, Noel C. F. and Gutman, David and Celebi, M. Emre and Helba, Brian and
               Marchetti, Michael A. and Dusza, Stephen W. and Kalloo, Aadi and Liopyris, Konstantinos and
               Mishra, Nabin and Kittler, Harald and Halpern, Allan},
  title     = {Skin Lesion Analysis Toward Melanoma Detection: A Challenge at the 2017 International Symposium
               on Biomedical Imaging (ISBI), Hosted by the International Skin Imaging Collaboration (ISIC)},
  booktitle = {IEEE International Symposium on Biomedical Imaging (ISBI)},
  year      = {2018},
  note      = {arXiv:1710.05006}
}""",
    ),
    "dsb2018": DatasetCard(
        title="2018 Data Science Bowl",
        description="Fluorescence and brightfield microscopy images of cell nuclei with instance masks "
        "(stage-1 training set, community-fixed; BBBC038).",
        url="https://bbbc.broadinstitute.org/BBBC038",
        licence_text="CC0 1.0",
        microns_per_pixel="varies between images (several microscopes and magnifications)",
        citation="""@article{caicedo2019dsb,
  author  = {Caicedo, Juan C. and others},
  title   = {Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl},
  journal = {Nature Methods},
  volume  = {16},
  pages   = {1247--1253},
  year    = {2019}
}""",
    ),
    "folder": DatasetCard(
        title="a user-supplied image folder",
        description="Images supplied by the publisher of this model; see the repository for details.",
        url="(not given)",
        licence_text="as stated by the publisher",
        microns_per_pixel="unknown",
        citation="",
    ),
}

METHOD_TITLES: dict[str, str] = {
    "autoencoder": "Autoencoder",
    "simclr": "SimCLR",
    "byol": "BYOL",
    "moco": "MoCo v2",
    "barlowtwins": "Barlow Twins",
    "densecl": "DenseCL",
    "detco": "DetCo",
    "random": "none (random initialisation)",
    "imagenet": "none (supervised ImageNet initialisation)",
}

METHOD_DESCRIPTIONS: dict[str, str] = {
    "autoencoder": "Autoencoder pretext task: a decoder reconstructs the input image from the encoder's features "
    "(pixel-wise reconstruction loss).",
    "simclr": "SimCLR (Chen et al. 2020): two augmented views of an image are pulled together and all other images "
    "of the batch pushed apart (NT-Xent contrastive loss on a projection head).",
    "byol": "BYOL (Grill et al. 2020): an online network predicts a momentum (target) network's projection of "
    "another view of the same image; no negatives.",
    "moco": "MoCo v2 (Chen et al. 2020): contrastive loss against a queue of negatives encoded by a momentum "
    "encoder, with an MLP projection head.",
    "barlowtwins": "Barlow Twins (Zbontar et al. 2021): the cross-correlation matrix of the two views' embeddings "
    "is driven towards the identity (redundancy reduction).",
    "densecl": "DenseCL (Wang et al. 2021): MoCo v2's global contrast plus a dense, pixel-level contrastive loss "
    "between corresponding locations of the two views.",
    "detco": "DetCo (Xie et al. 2021): contrastive learning across global images and local patches at several "
    "encoder stages.",
    "random": "No pretraining: the encoder starts from random weights.",
    "imagenet": "No self-supervised pretraining: the encoder starts from supervised ImageNet weights.",
}

TASK_METRICS = {"semantic": ["dice"], "instance": ["aji", "aji_plus", "pq", "dq", "sq", "dice"]}


def licence_for(dataset: str) -> str:
    """Hub licence identifier of a model trained on ``dataset`` (the data's licence carries over)."""
    return DATASET_LICENCES.get(dataset, "other")


def _flat_metrics(evaluation: dict[str, Any] | None) -> tuple[dict[str, float], str]:
    """``{metric: value}`` and a note, from an EvaluationResult JSON (``mean``/``pooled``) or a flat dict."""
    if not evaluation:
        return {}, ""
    if isinstance(evaluation.get("mean"), dict):
        values = {k: float(v) for k, v in evaluation["mean"].items() if isinstance(v, int | float)}
        pooled = evaluation.get("pooled") or {}
        values.update({f"{k} (pooled)": float(v) for k, v in pooled.items() if isinstance(v, int | float)})
        n = evaluation.get("n_images")
        note = f"Mean of per-image scores{f' over {n} images' if n else ''} (the challenge convention); pooled sums."
        return values, note
    values = {k: float(v) for k, v in evaluation.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return values, "Scores recorded with the model."


def _hyperparameters(training: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in training.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", json.dumps(v) if isinstance(v, dict | list) else str(v)) for k, v in value.items()]
        else:
            rows.append((key, json.dumps(value) if isinstance(value, list) else str(value)))
    return rows


def _base_model(config: Any, is_segmenter: bool, namespace: str | None) -> str | None:
    """The repo a model was initialised from: the zoo encoder (segmenters), smp's ImageNet weights, or none."""
    init = getattr(config, "init", config.method) if is_segmenter else config.method
    if init == "imagenet" or config.method == "imagenet":
        return f"smp-hub/{config.backbone}.imagenet"
    if not is_segmenter or init == "random":
        return None
    if is_zoo_name(init):
        return f"{hub_namespace(namespace)}/{init}"
    if "/" in init and is_zoo_name(init.split("/")[-1]) and init.count("/") == 1:
        return init
    if config.method in SSL_METHODS and config.dataset in NAMED_DATASETS:
        return f"{hub_namespace(namespace)}/{encoder_name(config.method, config.backbone, config.dataset)}"
    return None


def build_card(
    config: EncoderConfig | SegmenterConfig,
    name: str,
    *,
    repo_id: str | None = None,
    evaluation: dict[str, Any] | None = None,
    evaluation_dataset: str | None = None,
    extra_limitations: list[str] | None = None,
    provenance: str | None = None,
) -> ModelCard:
    """The model card of zoo entry ``name`` made with ``config``.

    ``provenance`` (Markdown: the exact commands, data split, wall time, machine) becomes the section
    "How this model was made".

    ``evaluation`` is an EvaluationResult JSON (``{"mean": {...}, "pooled": {...}, "n_images": n}``) or a flat
    ``{metric: value}``; for a segmenter without it, ``config.metrics`` is used. Real results only: they
    become the card's ``model-index``.
    """
    from huggingface_hub import ModelCard

    from sslzoo.models.segmenter import SegmenterConfig

    is_segmenter = isinstance(config, SegmenterConfig)
    task = config.task if isinstance(config, SegmenterConfig) else None
    namespace = repo_id.split("/")[0] if repo_id and "/" in repo_id else None
    data = DATASETS.get(config.dataset, DATASETS["folder"])
    if evaluation is None and isinstance(config, SegmenterConfig) and config.metrics:
        evaluation = dict(config.metrics)
    values, note = _flat_metrics(evaluation)

    card_data = _card_metadata(config, name, task, is_segmenter, namespace, values, evaluation_dataset, data)
    texts = (
        _segmenter_texts(config, name, data)
        if isinstance(config, SegmenterConfig)
        else _encoder_texts(config, name, data)
    )
    template_kwargs = _template_fields(
        config, name, task, is_segmenter, data, texts, values, note, evaluation_dataset, repo_id,
        _limitations(config, extra_limitations), provenance,
    )  # fmt: skip
    return ModelCard.from_template(card_data, template_path=str(TEMPLATE_PATH), **template_kwargs)


def _card_metadata(
    config: EncoderConfig | SegmenterConfig,
    name: str,
    task: str | None,
    is_segmenter: bool,
    namespace: str | None,
    values: dict[str, float],
    evaluation_dataset: str | None,
    data: DatasetCard,
) -> Any:
    """The card's YAML metadata (``ModelCardData``): licence, tags, datasets, metrics, pipeline tag, base model
    and the ``model-index`` of ``values``."""
    from huggingface_hub import EvalResult, ModelCardData

    pipeline_tag = "image-segmentation" if is_segmenter else "image-feature-extraction"
    eval_results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=config.dataset,
            dataset_name=evaluation_dataset or data.title,
            metric_type=key.replace(" (pooled)", "_pooled"),
            metric_name=key,
            metric_value=round(value, 6),
        )
        for key, value in values.items()
    ]
    tags = [
        "sslzoo",
        "self-supervised-learning",
        "biomedical-image-segmentation",
        "medical-imaging",
        "segmentation-models-pytorch",
        "pytorch",
        config.backbone,
        config.method,
        config.dataset,
    ]
    tags += ["nuclei-segmentation", "instance-segmentation"] if task == "instance" else []
    tags += ["semantic-segmentation"] if task == "semantic" else []
    return ModelCardData(
        library_name=LIBRARY_NAME,
        license=licence_for(config.dataset),
        tags=list(dict.fromkeys(tags)),
        datasets=[config.dataset] if config.dataset in DATASETS and config.dataset != "folder" else None,
        metrics=TASK_METRICS[task] if task else None,
        pipeline_tag=pipeline_tag,
        base_model=_base_model(config, is_segmenter, namespace),
        model_name=name,
        eval_results=eval_results or None,
    )


@dataclass(frozen=True)
class _KindTexts:
    """The parts of a card that differ between a segmenter and an encoder."""

    usage: str
    intended: str
    size_text: str
    output_text: str
    microns_per_pixel: str
    in_channels: int
    encoder_init: str | None


def _segmenter_texts(config: SegmenterConfig, name: str, data: DatasetCard) -> _KindTexts:
    """Usage, intended use, input size, output and pixel size of a segmenter card."""
    task = config.task
    return _KindTexts(
        usage=(
            f'from sslzoo.hub import load_segmenter\n\nsegmenter = load_segmenter("{name}")\n'
            "labels = segmenter.predict(image)  # uint8 RGB (H, W, 3) -> int32 label map (H, W)"
        ),
        intended=(
            f"{'Nuclei instance' if task == 'instance' else 'Foreground (lesion)'} segmentation of "
            f"{data.title}-like images for research: benchmarking, annotation assistance and as a "
            "baseline for annotation-efficient learning."
        ),
        size_text=(
            f"any height and width; an image up to {config.inference_tile}x{config.inference_tile} runs whole "
            f"(padded to a multiple of 32), a larger one in {config.inference_tile}-px windows overlapping by "
            f"{config.tile_overlap}, blended; the result has the input's size."
        ),
        output_text=(
            "an int32 label map, 0 background and 1..N one id per object (distance-map regression, then "
            "seeded watershed)"
            if task == "instance"
            else "a 0/1 mask (sigmoid(logit) > threshold)"
        ),
        microns_per_pixel=f"{config.microns_per_pixel} µm" if config.microns_per_pixel else data.microns_per_pixel,
        in_channels=3,
        encoder_init=config.init,
    )


def _encoder_texts(config: EncoderConfig, name: str, data: DatasetCard) -> _KindTexts:
    """Usage, intended use, input size, output and pixel size of an encoder card."""
    return _KindTexts(
        usage=(
            f'from sslzoo.hub import load_encoder\n\nencoder, config = load_encoder("{name}")\n'
            "features = encoder(x)  # x: (B, 3, H, W) normalised; returns [x, stage1, ..., stage5]"
        ),
        intended=(
            "Feature extraction and encoder initialisation for fine-tuning a U-Net on few annotated "
            f"{data.title}-like images (research)."
        ),
        size_text=(
            f"pretrained at {config.input_size}x{config.input_size}; any height and width divisible by 32 works."
        ),
        output_text=(
            f"the feature pyramid of a {config.backbone} (channels {list(config.out_channels) or 'n/a'}); "
            "embeddings = global average pool of the last stage"
        ),
        microns_per_pixel=data.microns_per_pixel,
        in_channels=config.in_channels,
        encoder_init=None,
    )


def _limitations(config: EncoderConfig | SegmenterConfig, extra: list[str] | None) -> list[str]:
    """The caller's extra limitations, plus the rounding note for weights stored below float32."""
    limitations = list(extra or [])
    if config.weights_dtype != "float32":
        limitations.append(
            f"The weights are stored in {config.weights_dtype} to keep the files small; loading converts them to "
            "float32. Outputs differ from the float32 original by rounding only (typically below 1e-2), which can "
            "move a few boundary pixels."
        )
    return limitations


def _template_fields(
    config: EncoderConfig | SegmenterConfig,
    name: str,
    task: str | None,
    is_segmenter: bool,
    data: DatasetCard,
    texts: _KindTexts,
    values: dict[str, float],
    note: str,
    evaluation_dataset: str | None,
    repo_id: str | None,
    limitations: list[str],
    provenance: str | None,
) -> dict[str, Any]:
    """The fields ``card_template.md`` fills in (title, summary, dataset, usage, preprocessing, evaluation, ...)."""
    kind = "segmenter" if is_segmenter else "encoder"
    load_name = repo_id or name
    method_title = METHOD_TITLES.get(config.method, config.method)
    return {
        "title": f"{name} — {method_title} {config.backbone} {kind} ({data.title})",
        "summary": (
            f"A {config.backbone} {kind} "
            + (
                f"pretrained with {method_title} on {data.title}"
                if not is_segmenter and config.method in SSL_METHODS
                else f"initialised with {method_title} and trained on {data.title}"
            )
            + (f" for {task} segmentation." if task else ".")
        ),
        "name": name,
        "kind": kind,
        "method_title": method_title,
        "backbone": config.backbone,
        "dataset_title": data.title,
        "dataset_description": data.description,
        "dataset_url": data.url,
        "dataset_licence_text": data.licence_text,
        "task": task,
        "code_version": config.code_version,
        "intended_use": texts.intended,
        "usage": texts.usage.replace(f'"{name}"', f'"{load_name}"') if repo_id else texts.usage,
        "method_description": METHOD_DESCRIPTIONS.get(config.method, f"Method: {config.method}."),
        "encoder_init": texts.encoder_init,
        "hyperparameters": _hyperparameters(config.training),
        "in_channels": texts.in_channels,
        "mean": list(config.mean),
        "std": list(config.std),
        "size_text": texts.size_text,
        "microns_per_pixel": texts.microns_per_pixel,
        "output_text": texts.output_text,
        "evaluation": [(k, f"{v:.4f}") for k, v in values.items()],
        "evaluation_note": note + (f" Data: {evaluation_dataset}." if evaluation_dataset else ""),
        "threshold": getattr(config, "threshold", 0.5),
        "extra_limitations": limitations,
        "provenance": (provenance or "").strip(),
        "citations": "\n".join(c for c in (PAPER_CITATION, data.citation) if c),
    }


def read_folder_config(folder: str | Path) -> EncoderConfig | SegmenterConfig:
    """The config of a model folder: ``segmenter.json`` (segmenter) or ``config.json`` (encoder)."""
    from sslzoo.models.encoders import CONFIG_FILE, EncoderConfig
    from sslzoo.models.segmenter import SEGMENTER_FILE, SegmenterConfig

    folder = Path(folder)
    try:
        if (folder / SEGMENTER_FILE).is_file():
            return SegmenterConfig.model_validate_json((folder / SEGMENTER_FILE).read_text())
        if (folder / CONFIG_FILE).is_file():
            return EncoderConfig.model_validate_json((folder / CONFIG_FILE).read_text())
    except ValueError as exc:
        raise DataError(f"{folder}: unreadable model config ({' '.join(str(exc).split())[:300]})") from exc
    raise DataError(
        f"{folder}: not a model folder; expected {SEGMENTER_FILE} (segmenter, from 'sslzoo finetune') or "
        f"{CONFIG_FILE} + model.safetensors (encoder, from 'sslzoo pretrain')"
    )


def entry_name_for(config: EncoderConfig | SegmenterConfig) -> str:
    """The zoo name a config implies: ``<method>-<backbone>-<dataset>[-<task>]``."""
    task = getattr(config, "task", None)
    return "-".join([config.method, config.backbone, config.dataset] + ([task] if task else []))


def card_for_folder(
    folder: str | Path,
    *,
    name: str | None = None,
    repo_id: str | None = None,
    evaluation: dict[str, Any] | None = None,
    evaluation_dataset: str | None = None,
    provenance: str | None = None,
) -> ModelCard:
    """The card of a model folder; ``name`` defaults to the repo id's entry part or the config's zoo name."""
    config = read_folder_config(folder)
    if name is None:
        candidate = repo_id.split("/")[-1] if repo_id else None
        name = candidate if candidate and is_zoo_name(candidate) else entry_name_for(config)
    return build_card(
        config,
        name,
        repo_id=repo_id,
        evaluation=evaluation,
        evaluation_dataset=evaluation_dataset,
        provenance=provenance,
    )


def write_card(folder: str | Path, out: str | Path | None = None, **kwargs: Any) -> Path:
    """Write the card of ``folder`` to ``out`` (default ``folder/README.md``); returns the path."""
    card = card_for_folder(folder, **kwargs)
    path = Path(out) if out else Path(folder) / CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(str(path))
    return path
