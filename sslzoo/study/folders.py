"""Where a study's files live (``work_dir`` holds the big files and defaults to ``out_dir``)::

    out_dir/study.json                                 the study config (STUDY_FILE)
    work_dir/pretrain/<method>-<backbone>-<dataset>/   exported encoder (PRETRAIN_DIR, ENCODER_WEIGHTS)
    work_dir/runs/<run_id>/                            one fine-tuning run (RUNS_DIR)

The tables in ``out_dir`` are :mod:`sslzoo.study.results` (runs.csv, iqc.csv) and :mod:`sslzoo.study.history`
(pretrain.csv).
"""

from __future__ import annotations

import json
from pathlib import Path

from sslzoo.study.config import StudyConfig
from sslzoo.vocabulary import join_name

STUDY_FILE = "study.json"
PRETRAIN_DIR = "pretrain"
RUNS_DIR = "runs"
ENCODER_WEIGHTS = "model.safetensors"


def encoder_name(method: str, backbone: str, dataset: str) -> str:
    """Folder name of a study encoder: the zoo grammar ``<method>-<backbone>-<dataset>`` (CONTRACTS.md section 1),
    with the study's own dataset key as ``<dataset>``."""
    return join_name(method, backbone, dataset)


def pretrain_folder(work_dir: str | Path, method: str, backbone: str, dataset: str) -> Path:
    """``work_dir/pretrain/<encoder name>``: the folder of one pretrained study encoder."""
    return Path(work_dir) / PRETRAIN_DIR / encoder_name(method, backbone, dataset)


def load_stored_config(out_dir: str | Path) -> StudyConfig | None:
    """The ``study.json`` of a study folder (None when absent)."""
    path = Path(out_dir) / STUDY_FILE
    return StudyConfig.model_validate(json.loads(path.read_text())) if path.is_file() else None
