"""Does ``sslzoo rank`` predict few-label fine-tuning? Validation on DSB 2018 (no zoo encoder was pretrained on it).

Protocol (docs/rank.md):

- ``prepare``: a seeded draw of ``--n-train`` labelled images (the user's "few labels") and ``--n-test`` other
  images (the scoring set) from DSB 2018 images no larger than ``--max-side`` pixels, as symlinks in
  ``OUT/data/{train,test}/{images,masks}`` (no copy of the data); with ``--extract`` also the encoders of the
  packaged segmenters (fine-tuned, not frozen: two more, different candidates) saved under ``OUT/encoders/``.
- ``groundtruth``: for every candidate encoder, :func:`sslzoo.downstream.finetune.finetune` on the ``train``
  images only (annotation rate 1.0 of them, the encoder frozen by default, a fixed ``--steps`` at batch 8 on
  128-px tiles, no validation, the authors' fixed watershed), scored on the ``test`` images (AJI+, DSC), for 3
  seeds. Resumable (each run keeps its ``result.json``); ``--watch-until HH:MM`` keeps picking up zoo entries
  that ``sslzoo zoo build`` finishes in ``$SSLZOO_ZOO_DIR`` until then.
- ``proxy``: ``rank_encoders`` on the same ``train`` images (all proxies are computed), one encoder at a time and
  cached per encoder (an encoder's scores do not depend on the other candidates).
- ``timing``: wall and CPU time of ranking every encoder a user gets (``--encoders all``) on those images.
- ``compare-rest``: ``sslzoo rank --json`` vs ``POST /predictions/rank`` on a real ``sslzoo serve --models rank``.
- ``report``: Spearman's rho between each proxy and the fine-tuned score over the encoders that have both, with
  a bootstrap 95 % CI (encoders resampled with replacement, 2000 draws), as a Markdown table.

    export SSLZOO_ZOO_DIR=/work/main/runs/zoo-cpu
    python bench/rank_validation.py prepare --extract
    setsid nohup nice -n 5 python bench/rank_validation.py groundtruth --watch-until 07:10 > runs/gt.log 2>&1 &
    python bench/rank_validation.py proxy --threads 1
    python bench/rank_validation.py timing --threads 2
    python bench/rank_validation.py compare-rest
    python bench/rank_validation.py report
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dsb2018"
if not DEFAULT_DATA.is_dir():
    DEFAULT_DATA = Path("/work/shared/data/dsb2018")
DEFAULT_OUT = REPO / "runs" / "rank-validation"
SEEDS = (0, 1, 2)
#: suffix of a zoo-folder entry whose name a packaged encoder shadows (validated as a candidate of its own)
ZOO_TWIN = "@zoo-folder"


#: the fine-tuned metrics the ground truth reports per task, the first the one a proxy must predict
GT_METRICS: dict[str, tuple[str, ...]] = {"instance": ("aji_plus", "dice"), "semantic": ("dice",)}
METRIC_LABEL = {"aji_plus": "AJI+", "dice": "DSC"}


def validation_task(out: Path) -> str:
    """The task of the validation set in ``out`` (``prepare`` writes ``OUT/task.txt``; older sets: instance)."""
    path = Path(out) / "task.txt"
    return path.read_text().strip() if path.is_file() else "instance"


def _log(message: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------ prepare
def prepare(args: argparse.Namespace) -> None:
    import csv

    import numpy as np

    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "task.txt").write_text(("semantic" if args.dataset == "isic2017" else "instance") + "\n")
    if args.dataset == "monuseg":
        prepare_monuseg(args)
        return
    if args.dataset == "isic2017":
        prepare_isic(args)
        return
    out = Path(args.out) / "data"
    rows = list(csv.DictReader((Path(args.data) / "train_manifest.csv").open()))
    small = sorted(r["id"] for r in rows if max(int(r["height"]), int(r["width"])) <= args.max_side)
    rng = np.random.default_rng(args.seed)
    picked = [small[i] for i in rng.permutation(len(small))[: args.n_train + args.n_test]]
    for split, ids in (("train", picked[: args.n_train]), ("test", picked[args.n_train :])):
        for sub in ("images", "masks"):
            folder = out / split / sub
            folder.mkdir(parents=True, exist_ok=True)
            for image_id in ids:
                link = folder / f"{image_id}.png"
                if not link.exists():
                    link.symlink_to(Path(args.data).resolve() / "train" / sub / f"{image_id}.png")
    channels = {r["id"]: r["channels"] for r in rows}
    colour = sum(channels[i] == "3" for i in picked[: args.n_train])
    _log(f"{out}: {args.n_train} train ({colour} RGB) + {args.n_test} test images of <= {args.max_side} px")
    if args.extract:
        extract_segmenter_encoders(Path(args.out) / "encoders")
    if args.synthetic:
        make_synthetic_encoders(Path(args.out))
    if args.ladder:
        make_ladder_encoders(Path(args.out))


def prepare_monuseg(args: argparse.Namespace) -> None:
    """The held-out MoNuSeg validation: crops of the 6 images the CPU zoo never pretrained or probed on.

    The 6 images of the zoo's hold-out rule (``sslzoo.zoo.probe.heldout_split``) are split 3 / 3 by a seeded draw,
    so no image gives both labelled and scoring crops. Each is cut into a 4 x 4 grid of ``--crop`` px crops; a
    seeded ``--n-train`` crops of the first three are the labelled images, ``--n-test`` crops of the other three
    the scoring set. Crops are written as PNG (16-bit instance masks, relabelled 1..N), not linked.
    """
    import numpy as np
    from PIL import Image
    from skimage.segmentation import relabel_sequential

    from sslzoo.data.datasets import open_dataset
    from sslzoo.zoo.probe import heldout_split

    samples = heldout_split(open_dataset(args.data, "monuseg"), None).eval
    rng = np.random.default_rng(args.seed)
    order = [samples[i] for i in rng.permutation(len(samples))]
    half = len(order) // 2
    out = Path(args.out) / "data"
    for split, group, count in (("train", order[:half], args.n_train), ("test", order[half:], args.n_test)):
        crops = []
        for sample in group:
            image = np.asarray(Image.open(sample.image).convert("RGB"))
            mask = np.asarray(Image.open(sample.mask))
            step = min(image.shape[:2]) // 4
            for y in range(4):
                for x in range(4):
                    window = (slice(y * step, y * step + args.crop), slice(x * step, x * step + args.crop))
                    crops.append((f"{sample.id}-y{y}x{x}", image[window], mask[window]))
        for index in sorted(rng.permutation(len(crops))[:count].tolist()):
            name, image, mask = crops[index]
            for sub in ("images", "masks"):
                (out / split / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(out / split / "images" / f"{name}.png")
            labels = relabel_sequential(mask.astype(np.int32))[0].astype(np.uint16)
            Image.fromarray(labels).save(out / split / "masks" / f"{name}.png")
        _log(f"{out / split}: {count} crops of {args.crop} px from {', '.join(s.id for s in group)}")


def prepare_isic(args: argparse.Namespace) -> None:
    """The held-out ISIC 2017 validation (semantic): images of the 150 ``val`` images, which no CPU zoo encoder was
    pretrained on (``configs/zoo/cpu.yaml`` pretrains on ``train`` + ``unlabeled``).

    A seeded draw of ``--n-train`` labelled and ``--n-test`` scoring images, each squeezed whole to ``--resize``
    px square (bilinear; masks nearest, 0/255), as the CPU zoo's ISIC probe and pretraining see them, written as
    PNG. The packaged ISIC-fine-tuned segmenter's encoder is no candidate here (it was trained on ISIC labels).
    """
    import numpy as np
    from PIL import Image

    from sslzoo.data.datasets import open_dataset

    data = Path(args.data) if args.data != str(DEFAULT_DATA) else DEFAULT_DATA.parent / "isic2017"
    samples = sorted((s for s in open_dataset(data, "isic2017").labelled() if s.split == "val"), key=lambda s: s.id)
    rng = np.random.default_rng(args.seed)
    picked = [samples[i] for i in rng.permutation(len(samples))[: args.n_train + args.n_test]]
    out = Path(args.out) / "data"
    size = (args.resize, args.resize)
    for split, group in (("train", picked[: args.n_train]), ("test", picked[args.n_train :])):
        for sub in ("images", "masks"):
            (out / split / sub).mkdir(parents=True, exist_ok=True)
        for sample in group:
            image = Image.open(sample.image).convert("RGB").resize(size, Image.Resampling.BILINEAR)
            image.save(out / split / "images" / f"{sample.id}.png")
            mask = np.asarray(Image.open(sample.mask).convert("L").resize(size, Image.Resampling.NEAREST)) > 127
            Image.fromarray((mask * 255).astype(np.uint8)).save(out / split / "masks" / f"{sample.id}.png")
        _log(f"{out / split}: {len(group)} ISIC val images squeezed to {args.resize} px")


def extract_segmenter_encoders(out: Path) -> None:
    """The encoders of the packaged segmenters (fine-tuned end to end) as encoder folders."""
    from sslzoo.hub.defaults import packaged_folder, packaged_names
    from sslzoo.models.encoders import EncoderConfig, save_encoder
    from sslzoo.models.segmenter import Segmenter
    from sslzoo.vocabulary import parse_name

    for name in packaged_names():
        if parse_name(name).kind != "segmenter":
            continue
        target = out / f"{name}-encoder"
        if (target / "model.safetensors").is_file():
            continue
        folder = packaged_folder(name)
        assert folder is not None
        segmenter = Segmenter.from_pretrained(folder, device="cpu")
        cfg = segmenter.config
        config = EncoderConfig(
            backbone=cfg.backbone, method=cfg.method or "densecl", dataset=f"{cfg.dataset}-finetuned", mean=cfg.mean,
            std=cfg.std, training={"extracted_from": name},
        )  # fmt: skip
        save_encoder(segmenter.model.encoder, target, config)
        _log(f"extracted the encoder of {name} into {target}")


def mix_with_random_init(encoder: Any, share: float) -> None:
    """Set every floating-point tensor of ``encoder`` (batch-norm statistics too) to ``(1 - share) * w + share * r``,
    ``r`` the same tensor of a seeded (``torch.manual_seed(0)``) random resnet18 init."""
    import torch

    from sslzoo.models.encoders import create_encoder

    torch.manual_seed(0)
    random_state = create_encoder("resnet18").state_dict()
    encoder.load_state_dict(
        {
            k: (1 - share) * v + share * random_state[k] if v.is_floating_point() else v
            for k, v in encoder.state_dict().items()
        }
    )


def make_synthetic_encoders(out: Path) -> None:
    """Two more candidates of in-between quality, made from the extracted encoders (labelled "synthetic" in the
    report): the MoNuSeg-fine-tuned encoder's weights averaged with a seeded random init (``mix50-``), and the
    ISIC-fine-tuned encoder with seeded Gaussian noise of half each tensor's standard deviation (``noisy-``)."""
    import torch

    from sslzoo.models.encoders import EncoderConfig, load_encoder_folder, save_encoder

    recipes = {
        "synthetic-mix50-monuseg-instance-encoder": "densecl-resnet18-monuseg-instance-encoder",
        "synthetic-noisy-isic2017-semantic-encoder": "densecl-resnet18-isic2017-semantic-encoder",
    }
    for name, source in recipes.items():
        target = out / "encoders" / name
        if (target / "model.safetensors").is_file():
            continue
        encoder, config = load_encoder_folder(out / "encoders" / source)
        if name.startswith("synthetic-mix50"):
            mix_with_random_init(encoder, 0.5)
        else:
            state = encoder.state_dict()
            generator = torch.Generator().manual_seed(0)
            for key, value in state.items():
                if value.is_floating_point() and "running" not in key:
                    noise = torch.randn(value.shape, generator=generator) * 0.5 * value.float().std().nan_to_num(0.0)
                    state[key] = value + noise.to(value.dtype)
            encoder.load_state_dict(state)
        base = config or EncoderConfig(backbone="resnet18", method="densecl", dataset="folder")
        save_encoder(encoder, target, base.model_copy(update={"training": {"synthetic_from": source}}))
        _log(f"made {target}")


#: the ladder's share of random init: w = (1 - a) * E + a * R (docs/rank.md run 8)
LADDER = (0.25, 0.5, 0.75)
LADDER_SOURCE = "densecl-resnet18-isic2017-semantic-encoder"


def make_ladder_encoders(out: Path) -> None:
    """A quality ladder between the ISIC-fine-tuned segmenter's encoder E (``--extract``) and a seeded random init
    R: every floating-point tensor (batch-norm statistics too) is ``(1 - a) * E + a * R`` for each a of
    :data:`LADDER`, saved as ``synthetic-ladder-a<100a>-encoder``."""
    from sslzoo.models.encoders import EncoderConfig, load_encoder_folder, save_encoder

    source = out / "encoders" / LADDER_SOURCE
    if not (source / "model.safetensors").is_file():
        raise SystemExit(f"{source} is missing: run prepare --extract first")
    for share in LADDER:
        target = out / "encoders" / f"synthetic-ladder-a{round(share * 100)}-encoder"
        if (target / "model.safetensors").is_file():
            continue
        encoder, config = load_encoder_folder(source)
        mix_with_random_init(encoder, share)
        base = config or EncoderConfig(backbone="resnet18", method="densecl", dataset="folder")
        save_encoder(encoder, target, base.model_copy(update={"training": {"ladder_from": LADDER_SOURCE, "a": share}}))
        _log(f"made {target}")


def candidate_specs(out: Path) -> list[tuple[str, str]]:
    """``(name, spec)`` of every candidate: available_encoders() + extracted segmenter encoders + zoo-folder entries
    that a packaged name shadows (given as paths)."""
    from sslzoo.downstream.rank import available_encoders
    from sslzoo.hub.zoo_folder import zoo_folder_entries

    candidates = available_encoders()
    specs = [(c.name, c.spec) for c in candidates]
    names = {c.name for c in candidates if c.source == "packaged"}  # a zoo-folder candidate is already itself
    for name, folder in zoo_folder_entries().items():
        if name in names and (folder / "config.json").is_file() and not (folder / "segmenter.json").exists():
            specs.append((f"{name}{ZOO_TWIN}", str(folder)))
    for folder in sorted((out / "encoders").glob("*")):
        if (folder / "model.safetensors").is_file():
            specs.append((folder.name, str(folder)))
    return specs


# ------------------------------------------------------------------------------------------------ ground truth
def groundtruth_run(name: str, spec: str, seed: int, args: argparse.Namespace) -> dict:
    from sslzoo.downstream.finetune import FinetuneConfig, finetune

    mode = "frozen" if not args.unfrozen else "unfrozen"
    out = Path(args.out) / "gt" / f"{mode}-{args.steps}" / name / f"seed{seed}"
    decoder = (256, 128, 64, 32, 16)  # smp's default widths: ~4x cheaper than the authors' 512..32 on this CPU
    config = FinetuneConfig(
        init=spec, backbone="resnet18", task=validation_task(Path(args.out)), rate=1.0, frozen=not args.unfrozen,
        seed=seed, epochs=1, max_steps=args.steps, batch_size=8, lr=1e-3, tile_size=128, val_fraction=0.0,
        patience=args.steps, workers=0, decoder_channels=decoder,
    )  # fmt: skip
    began = time.perf_counter()
    result = finetune(config, Path(args.out) / "data", out, accelerator="cpu", devices=1, resume=True, progress=False)
    ckpt = out / "checkpoints"
    if ckpt.is_dir():
        import shutil

        shutil.rmtree(ckpt, ignore_errors=True)  # result.json is kept; the checkpoint is only for resuming
    return {"score": result.score, "scores": result.scores, "seconds": time.perf_counter() - began}


def groundtruth(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    deadline = None
    if args.watch_until:
        hour, minute = map(int, args.watch_until.split(":"))
        now = dt.datetime.now(dt.UTC)
        deadline = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    done: set[str] = set()
    while True:
        todo = [(n, s) for n, s in candidate_specs(Path(args.out)) if n not in done]
        if args.only:
            todo = [(n, s) for n, s in todo if n in args.only]
        for name, spec in todo:
            for seed in args.seeds or SEEDS:
                if deadline is not None and dt.datetime.now(dt.UTC) > deadline:
                    _log("deadline reached; stopping")
                    return
                try:
                    run = groundtruth_run(name, spec, seed, args)
                except Exception as exc:  # keep going: one broken entry must not stop the sweep
                    _log(f"{name} seed {seed}: FAILED {type(exc).__name__}: {exc}")
                    break
                metrics = " ".join(f"{k} {v:.4f}" for k, v in run["scores"].items() if k in METRIC_LABEL)
                _log(f"{name} seed {seed}: {metrics} ({run['seconds']:.0f} s)")
            done.add(name)
        if deadline is None or dt.datetime.now(dt.UTC) > deadline:
            return
        time.sleep(60)


def load_groundtruth(out: Path, mode: str) -> dict[str, dict]:
    """``{encoder: {metric: mean, metric_std: sd, "seeds": n, "per_seed": ...}}`` of the finished 3-seed runs, for
    every metric of :data:`GT_METRICS` of the set's task."""
    import numpy as np

    table = {}
    root = out / "gt" / mode
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        per_seed = {
            k: json.loads(path.read_text())["scores"]
            for k in SEEDS
            if (path := folder / f"seed{k}" / "result.json").is_file()
        }
        if len(per_seed) < len(SEEDS):
            continue
        row: dict = {"seeds": len(per_seed), "per_seed": per_seed}
        for metric in GT_METRICS[validation_task(out)]:
            values = [scores[metric] for scores in per_seed.values()]
            row.update({metric: float(np.mean(values)), f"{metric}_std": float(np.std(values, ddof=1))})
        table[folder.name] = row
    return table


# ------------------------------------------------------------------------------------------------ proxy
def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proxy(args: argparse.Namespace) -> None:
    """The proxy of every candidate on the 20 training images, one encoder at a time (an encoder's scores do not
    depend on the other candidates), cached per encoder in OUT/proxy-<budget>-seed<seed>/<name>.json."""
    import torch

    from sslzoo.downstream.rank import RankSettings, rank_folder

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    folder = proxy_folder(out, args.budget, args.seed, args.first_stage, args.probe)
    folder.mkdir(parents=True, exist_ok=True)
    settings = RankSettings.from_budget(
        args.budget, seed=args.seed, backbone="resnet18", first_stage=args.first_stage, probe=args.probe
    )
    for name, spec in candidate_specs(out):
        target = folder / f"{name}.json"
        if target.is_file() and not args.force:
            continue
        load, cpu, began = os.getloadavg(), _cpu_seconds(), time.perf_counter()
        ranking = rank_folder(out / "data" / "train", validation_task(out), [spec], settings)  # type: ignore[arg-type]
        row = ranking.ranking[0].model_dump(mode="json")
        row.update(encoder=name, wall_seconds=time.perf_counter() - began, cpu_seconds=_cpu_seconds() - cpu)
        row.update(loadavg=load, threads=args.threads, n_images=ranking.n_images)
        target.write_text(json.dumps(row, indent=2) + "\n")
        _log(f"{name}: {row['proxies']} ({row['wall_seconds']:.0f} s wall, {row['cpu_seconds']:.0f} s CPU)")


def proxy_folder(out: Path, budget: str, seed: int, first_stage: int = 0, probe: str = "readout") -> Path:
    """``OUT/proxy-[finetune-]<budget>[-stages<k>]-seed<seed>``: one cached proxy JSON per encoder."""
    kind = "finetune-" if probe == "finetune" else ""
    return out / f"proxy-{kind}{budget}{f'-stages{first_stage}' if first_stage else ''}-seed{seed}"


def load_proxy(out: Path, budget: str, seed: int, first_stage: int = 0, probe: str = "readout") -> list[dict]:
    folder = proxy_folder(out, budget, seed, first_stage, probe)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def timing(args: argparse.Namespace) -> None:
    """Wall and CPU time of ranking every candidate of the validation (the packaged and zoo-folder encoders, random,
    and the bench's extra encoder folders) in one call on the 20 images, as the CLI does."""
    import torch

    from sslzoo.downstream.rank import RankSettings, plot_ranking, rank_folder

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    load, cpu, began = os.getloadavg(), _cpu_seconds(), time.perf_counter()
    # the zoo-folder twin of a packaged name is left out: a user cannot name both (their names clash)
    specs = [spec for name, spec in candidate_specs(out) if not name.endswith(ZOO_TWIN)]
    settings = RankSettings.from_budget(args.budget, probe=args.probe)
    ranking = rank_folder(out / "data" / "train", validation_task(out), specs, settings)  # type: ignore[arg-type]
    kind = "finetune-" if args.probe == "finetune" else ""
    wall, cpu = time.perf_counter() - began, _cpu_seconds() - cpu
    record = {
        "budget": f"{kind}{args.budget}", "threads": args.threads, "n_encoders": len(ranking.ranking),
        "n_images": ranking.n_images, "wall_seconds": wall, "cpu_seconds": cpu, "loadavg_before": load,
        "loadavg_after": os.getloadavg(), "uptime": os.popen("uptime").read().strip(),
        "encoders": [r.encoder for r in ranking.ranking], "recommendation": ranking.recommendation,
    }  # fmt: skip
    (out / f"timing-{kind}{args.budget}-threads{args.threads}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / f"ranking-{kind}{args.budget}.json").write_text(ranking.model_dump_json(indent=2) + "\n")
    plot_ranking(ranking, out / f"ranking-{kind}{args.budget}.png")
    _log(f"{record['n_encoders']} encoders x {record['n_images']} images: {wall:.1f} s wall, {cpu:.1f} s CPU "
         f"({args.threads} threads); {record['uptime']}")  # fmt: skip


# ------------------------------------------------------------------------------------------------ report
def spearman_ci(x: list[float], y: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho and a percentile bootstrap 95 % CI (pairs resampled; degenerate draws skipped)."""
    import numpy as np
    from scipy.stats import spearmanr

    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    xs, ys, values = np.asarray(x), np.asarray(y), []
    for _ in range(draws):
        pick = rng.integers(0, len(xs), len(xs))
        if len(set(pick.tolist())) < 3:
            continue
        value = spearmanr(xs[pick], ys[pick]).statistic
        if np.isfinite(value):
            values.append(value)
    lo, hi = np.percentile(values, [2.5, 97.5]) if values else (float("nan"), float("nan"))
    return rho, float(lo), float(hi)


def noise_ceiling(single_seed_rho: float, seeds: int) -> tuple[float, float]:
    """(reliability, ceiling) of a ``seeds``-seed mean ranking whose single seeds agree at ``single_seed_rho``.

    Spearman-Brown: reliability R = k r / (1 + (k - 1) r); a perfect proxy correlates with the noisy mean at about
    sqrt(R) (the attenuation bound), so a target rho above sqrt(R) cannot be shown with this ground truth.
    """
    r = max(single_seed_rho, 0.0)
    reliability = seeds * r / (1 + (seeds - 1) * r)
    return reliability, reliability**0.5


def noise_ceiling_text(single_seed_rho: float, seeds: int) -> str:
    reliability, ceiling = noise_ceiling(single_seed_rho, seeds)
    return (
        f"Spearman-Brown reliability of the {seeds}-seed mean {reliability:.2f}: a perfect proxy would reach "
        f"rho ~ {ceiling:.2f}"
    )


def short_finetune_lines(out: Path, truths: dict[str, dict[str, dict]]) -> list[str]:
    """A short fine-tuning run as the proxy: runs of seeds outside SEEDS (``groundtruth --steps K --seeds 3``; no
    seed shared with the ground truth) against every 3-seed ground truth in ``truths`` ({mode: load_groundtruth}),
    as Spearman rho with its CI."""
    import numpy as np

    lines = []
    metric = GT_METRICS[validation_task(out)][0]
    for mode_dir in sorted((out / "gt").glob("*")):
        runs: dict[str, list[float]] = {}
        for result in mode_dir.glob("*/seed*/result.json"):
            if int(result.parent.name[4:]) not in SEEDS:
                runs.setdefault(result.parent.parent.name, []).append(json.loads(result.read_text())["scores"][metric])
        for truth_mode, truth in truths.items():
            names = sorted(n for n in runs if n in truth)
            if len(names) < 3:
                continue
            rho, lo, hi = spearman_ci([float(np.mean(runs[n])) for n in names], [truth[n][metric] for n in names])
            lines.append(
                f"short fine-tune as proxy: {METRIC_LABEL[metric]} of {mode_dir.name} (seeds outside 0-2) vs the "
                f"{truth_mode} "
                f"ground truth: "
                f"Spearman {rho:.2f} [{lo:.2f}, {hi:.2f}] over {len(names)} encoders"
            )
    return lines


def report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows_all = load_proxy(out, args.budget, args.seed, args.first_stage, args.probe)
    lines = []
    metrics = GT_METRICS[validation_task(out)]
    first = metrics[0]
    truths = {p.name: load_groundtruth(out, p.name) for p in sorted((out / "gt").glob("*"))}
    for mode, gt in truths.items():
        rows = [r for r in rows_all if r["encoder"] in gt]
        if len(rows) < 3:
            lines.append(f"{mode}: only {len(rows)} encoders with 3 seeds; no correlation")
            continue
        lines.append(f"\n### ground truth: {mode} ({len(rows)} encoders, 3 seeds each)\n")
        heads = " | ".join(f"fine-tuned {METRIC_LABEL[m]}" for m in metrics)
        lines.append(f"| encoder | {heads} | " + " | ".join(rows[0]["proxies"]) + " |")
        lines.append("|---|" + "---|" * (len(metrics) + len(rows[0]["proxies"])))
        for r in sorted(rows, key=lambda r: -gt[r["encoder"]][first]):
            g = gt[r["encoder"]]
            cells = " | ".join(f"{v:.3f}" for v in r["proxies"].values())
            truth_cells = " | ".join(
                [f"{g[first]:.3f} ± {g[f'{first}_std']:.3f}", *(f"{g[m]:.3f}" for m in metrics[1:])]
            )
            lines.append(f"| {r['encoder']} | {truth_cells} | {cells} |")
        from itertools import combinations

        from scipy.stats import spearmanr

        names = [r["encoder"] for r in rows]
        for metric in metrics:
            pairs = [
                spearmanr(
                    [gt[n]["per_seed"][a][metric] for n in names], [gt[n]["per_seed"][b][metric] for n in names]
                ).statistic
                for a, b in combinations(SEEDS, 2)
            ]
            mean = sum(pairs) / len(pairs)
            lines.append(
                f"\nground-truth self-consistency ({metric}): Spearman between single-seed rankings "
                f"{', '.join(f'{p:.2f}' for p in pairs)} (mean {mean:.2f}); {noise_ceiling_text(mean, len(SEEDS))}"
            )
        lines.append("\n| proxy | vs | Spearman rho | 95 % bootstrap CI | p (two-sided) |\n|---|---|---|---|---|")
        for proxy_name in rows[0]["proxies"]:
            for metric in metrics:
                xs, ys = [r["proxies"][proxy_name] for r in rows], [gt[r["encoder"]][metric] for r in rows]
                rho, lo, hi = spearman_ci(xs, ys)
                p_value = float(spearmanr(xs, ys).pvalue)
                lines.append(
                    f"| {proxy_name} | fine-tuned {metric} | {rho:.3f} | [{lo:.3f}, {hi:.3f}] | {p_value:.3f} |"
                )
    from scipy.stats import spearmanr

    lines += short_finetune_lines(out, truths)
    for folder in sorted(out.glob("proxy-*-seed*")):
        if folder == proxy_folder(out, args.budget, args.seed, args.first_stage, args.probe):
            continue
        other = {r["encoder"]: r for r in (json.loads(p.read_text()) for p in folder.glob("*.json"))}
        common = [r for r in rows_all if r["encoder"] in other]
        if len(common) < 3:
            continue
        for proxy_name in common[0]["proxies"]:
            if any(proxy_name not in other[r["encoder"]]["proxies"] for r in common):
                continue  # another probe's proxies
            rho = spearmanr([r["proxies"][proxy_name] for r in common], [other[r["encoder"]]["proxies"][proxy_name]
                            for r in common]).statistic  # fmt: skip
            lines.append(
                f"proxy stability: {proxy_name} of proxy-{args.budget}-seed{args.seed} vs {folder.name}: Spearman "
                f"{rho:.2f} over {len(common)} encoders"
            )
    for path in sorted(out.glob("timing-*.json")):
        t = json.loads(path.read_text())
        lines.append(
            f"\ntiming ({t['budget']}): {t['n_encoders']} encoders on {t['n_images']} images in "
            f"{t['wall_seconds']:.1f} s wall / {t['cpu_seconds']:.1f} s CPU with {t['threads']} threads; "
            f"load before {t['loadavg_before']}"
        )
    text = "\n".join(lines)
    print(text)
    (out / "report.md").write_text(text + "\n")


# ------------------------------------------------------------------------------------------------ CLI vs REST
def compare_rest(args: argparse.Namespace) -> None:
    """``sslzoo rank --json`` and ``POST /predictions/rank`` (a real ``sslzoo serve --models rank``) on the same
    images: the same encoders in the same order with the same scores."""
    import subprocess
    import tempfile

    import httpx

    from sslzoo.serving.server import free_ports

    data = Path(args.data_dir) if args.data_dir else Path(args.out) / "data" / "train"
    from sslzoo.serving.server import absolute_path_env

    # the server runs in its own work folder: relative $SSLZOO_ZOO_DIR etc. are made absolute against this one
    env = absolute_path_env(dict(os.environ, SSLZOO_TORCH_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads)))
    sslzoo = [sys.executable, "-m", "sslzoo"]
    task = validation_task(Path(args.out))
    cli_command = [*sslzoo, "rank", "--data", str(data), "--task", task, "--budget", args.budget, "--json"]
    cli_command += ["--threads", str(args.threads)]
    began = time.perf_counter()
    cli = json.loads(subprocess.run(cli_command, env=env, check=True, capture_output=True, text=True).stdout)
    cli_seconds = time.perf_counter() - began
    _log(f"CLI: {[r['encoder'] for r in cli['ranking']]} in {cli_seconds:.1f} s")

    work = Path(tempfile.mkdtemp(prefix="rank-rest-"))
    (work / "keys.txt").write_text("rank-demo-key-0123456789\n")
    ports = free_ports(6)
    names = ["--inference-port", "--management-port", "--metrics-port", "--engine-port", "--grpc-inference-port"]
    serve = [*sslzoo, "serve", "--models", "rank", "--workdir", str(work / "work")]
    serve += ["--api-keys", str(work / "keys.txt")]
    for name, port in zip([*names, "--grpc-management-port"], ports, strict=True):
        serve += [name, str(port)]
    log = (work / "serve.out").open("wb")
    server = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + 300
        while b"sslzoo: READY" not in (work / "serve.out").read_bytes():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((work / "serve.out").read_text()[-3000:])
            time.sleep(0.5)
        url = f"http://127.0.0.1:{ports[0]}/predictions/rank"
        headers = {"Authorization": "Bearer rank-demo-key-0123456789"}
        files = []
        for i, image in enumerate(sorted((data / "images").glob("*.png"))):
            files.append((f"image_{i}", (image.name, image.read_bytes(), "image/png")))
            files.append((f"mask_{i}", (image.name, (data / "masks" / image.name).read_bytes(), "image/png")))
        fields = {"task": task, "budget": args.budget}
        began = time.perf_counter()
        reply = httpx.post(url, headers=headers, data=fields, files=files, timeout=600)
        rest_seconds = time.perf_counter() - began
        reply.raise_for_status()
        rest = reply.json()
        _log(f"REST: {[r['encoder'] for r in rest['ranking']]} in {rest_seconds:.1f} s")
        bad = httpx.post(url, headers=headers, data={"task": task}, files=files[::2], timeout=60)
        _log(f"REST without masks: {bad.status_code} {bad.json()['message'][:100]}")
        ping = httpx.get(f"http://127.0.0.1:{ports[0]}/ping", timeout=10)
        _log(f"GET /ping after the bad request: {ping.status_code}")
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    same_order = [r["encoder"] for r in cli["ranking"]] == [r["encoder"] for r in rest["ranking"]]
    gap = max(abs(a["score"] - b["score"]) for a, b in zip(cli["ranking"], rest["ranking"], strict=True))
    record = {
        "cli": cli, "rest": rest, "same_order": same_order, "max_score_difference": gap, "cli_seconds": cli_seconds,
        "rest_seconds": rest_seconds, "loadavg": os.getloadavg(), "data": str(data),
    }  # fmt: skip
    (Path(args.out) / "cli-vs-rest.json").write_text(json.dumps(record, indent=2) + "\n")
    _log(f"same order: {same_order}; largest score difference {gap:.2e}")
    for a, b in zip(cli["ranking"], rest["ranking"], strict=True):
        print(f"  {a['rank']:>2} {a['encoder']:<32} CLI {a['score']:.4f} ± {a['std']:.4f}   REST {b['encoder']:<32} "
              f"{b['score']:.4f} ± {b['std']:.4f}")  # fmt: skip
    print(f"  recommendation (CLI) : {cli['recommendation']}\n  recommendation (REST): {rest['recommendation']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument(
        "--dataset", choices=["dsb2018", "monuseg", "isic2017"], default="dsb2018",
        help="monuseg: held-out crops (instance); isic2017: held-out val images, squeezed (semantic)",
    )  # fmt: skip
    p.add_argument("--resize", type=int, default=128, help="isic2017: squeeze every image to this square size")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset folder (monuseg: its folder)")
    p.add_argument("--crop", type=int, default=250, help="monuseg: crop size (px)")
    p.add_argument("--n-train", type=int, default=20)
    p.add_argument("--n-test", type=int, default=24)
    p.add_argument("--max-side", type=int, default=360)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extract", action="store_true", help="also extract the packaged segmenters' encoders")
    p.add_argument("--synthetic", action="store_true", help="also make two synthetic in-between encoders")
    p.add_argument("--ladder", action="store_true", help="also make the run-8 quality ladder (needs --extract)")
    p.set_defaults(func=prepare)
    g = sub.add_parser("groundtruth")
    g.add_argument("--steps", type=int, default=40)
    g.add_argument("--unfrozen", action="store_true")
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--watch-until", default=None, metavar="HH:MM", help="UTC; keep picking up new zoo entries")
    g.add_argument("--only", nargs="*", default=None)
    g.add_argument(
        "--seeds", type=int, nargs="*", default=None, help="seeds (default 0 1 2); others than 0-2: a short-run proxy"
    )
    g.set_defaults(func=groundtruth)
    for name, func in (("proxy", proxy), ("report", report), ("timing", timing)):
        q = sub.add_parser(name)
        q.add_argument("--force", action="store_true", help="proxy: recompute cached encoders")
        q.add_argument("--budget", default="standard")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--probe", default="readout", choices=("readout", "finetune"), help="the rank probe")
        q.add_argument(
            "--first-stage", type=int, default=0, help="proxy/report: read out only the stages after the first K"
        )
        q.set_defaults(func=func)
    c = sub.add_parser("compare-rest")
    c.add_argument("--budget", default="standard")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--data-dir", default=None, help="labelled folder (default OUT/data/train)")
    c.set_defaults(func=compare_rest)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
