"""Encoder factory and the encoder file format of the zoo (CONTRACTS.md section 1).

An encoder is an smp ResNet encoder (a torchvision ``ResNet`` without ``fc``) whose
``forward`` returns the feature pyramid ``[x, stage1, ..., stage5]``. On disk it is a
folder holding ``model.safetensors`` (the encoder's smp/torchvision key names, no
``fc.*``), so that ``smp.Unet(backbone).encoder.load_state_dict(sd)`` loads it
strictly, and ``config.json`` (:class:`EncoderConfig`). Weights may be stored in float16 or
bfloat16 (compact zoo entries, ``sslzoo zoo package``); loading copies them into the float32 modules.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, Field
from torch import nn

from sslzoo import __version__
from sslzoo.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from sslzoo.errors import ConfigError, DataError
from sslzoo.vocabulary import BACKBONES, BASELINES

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

SUPPORTED_BACKBONES: tuple[str, ...] = BACKBONES

#: Storage dtype of the floating-point tensors in ``model.safetensors``.
WeightsDtype = Literal["float32", "float16", "bfloat16"]
WEIGHTS_DTYPES: tuple[str, ...] = get_args(WeightsDtype)


class EncoderConfig(BaseModel):
    """``config.json`` of an exported encoder."""

    backbone: str
    method: str
    dataset: str
    input_size: int = 256
    in_channels: int = 3
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    out_channels: list[int] = Field(default_factory=list)
    weights_dtype: WeightsDtype = Field("float32", description="storage dtype of model.safetensors' float tensors")
    training: dict[str, Any] = Field(default_factory=dict)
    code_version: str = __version__
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))


def check_backbone(backbone: str) -> str:
    if backbone not in SUPPORTED_BACKBONES:
        raise ConfigError(f"unsupported backbone {backbone!r}; choose one of {', '.join(SUPPORTED_BACKBONES)}")
    return backbone


def create_encoder(backbone: str = "resnet50", weights: str | None = None, in_channels: int = 3) -> nn.Module:
    """Build an smp encoder; ``weights`` is ``None`` (random init) or ``"imagenet"`` (downloads)."""
    from segmentation_models_pytorch.encoders import get_encoder

    check_backbone(backbone)
    return get_encoder(backbone, in_channels=in_channels, depth=5, weights=weights)


def weights_dtype_of(state: Mapping[str, torch.Tensor]) -> WeightsDtype:
    """The dtype name of the floating-point tensors of ``state`` (``float32`` when it has none)."""
    dtypes = {str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()}
    if len(dtypes) > 1 or not dtypes <= set(WEIGHTS_DTYPES):
        raise DataError(f"weights mix or use unsupported float dtypes {sorted(dtypes)}; use one of {WEIGHTS_DTYPES}")
    return dtypes.pop() if dtypes else "float32"  # type: ignore[return-value]


def encoder_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights under smp/torchvision names, without ``fc.*``, contiguous, on CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items() if not k.startswith("fc.")}


def save_encoder(encoder: nn.Module, out_dir: str | Path, config: EncoderConfig) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir``; returns the folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = encoder_state_dict(encoder)
    config = config.model_copy(
        update={
            "out_channels": config.out_channels or list(getattr(encoder, "out_channels", [])),
            "weights_dtype": weights_dtype_of(state),
        }
    )
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
    return out


def read_encoder_files(path: str | Path) -> tuple[dict[str, torch.Tensor], EncoderConfig | None]:
    """Read an encoder folder (or a bare ``.safetensors`` file): state dict and config if present."""
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise DataError(f"{path}: no {WEIGHTS_FILE} found; pass an encoder folder made by 'sslzoo pretrain'")
    state = load_file(str(weights))
    config_path = weights.parent / CONFIG_FILE
    config = EncoderConfig.model_validate(json.loads(config_path.read_text())) if config_path.is_file() else None
    return state, config


def load_encoder_folder(path: str | Path, backbone: str | None = None) -> tuple[nn.Module, EncoderConfig | None]:
    """Build the encoder described by an exported folder and load its weights strictly.

    Only folders (or a bare ``.safetensors`` file); names, aliases and baselines go through
    ``sslzoo.hub.load_encoder``. ``backbone`` is used only when the folder has no ``config.json``.
    """
    state, config = read_encoder_files(path)
    backbone = backbone or (config.backbone if config else None)
    if backbone is None:
        raise ConfigError(f"{path}: no config.json; pass the backbone explicitly")
    encoder = create_encoder(backbone)
    load_encoder_state(encoder, state, source=str(path))
    return encoder, config


def load_encoder_state(encoder: nn.Module, state: dict[str, torch.Tensor], source: str = "<state>") -> None:
    """Load ``state`` strictly (smp's own ``load_state_dict`` silently drops ``fc.*`` and returns None)."""
    try:
        nn.Module.load_state_dict(encoder, state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) < 240 else detail[:240] + "..."
        raise DataError(
            f"{source}: weights do not match this encoder ({detail}); was it exported for another backbone?"
        ) from exc


def baseline_encoder(method: str, backbone: str = "resnet50") -> tuple[nn.Module, EncoderConfig]:
    """An untrained initialisation: ``random`` (smp's init, drawn from torch's global RNG) or ``imagenet``.

    ``imagenet`` downloads through smp / the Hugging Face Hub; offline (or with
    ``HF_HUB_OFFLINE=1`` and an empty cache) it fails with a :class:`ConfigError`
    that says how to fix it.
    """
    if method == "random":
        return create_encoder(backbone), EncoderConfig(backbone=backbone, method="random", dataset="none")
    if method != "imagenet":
        raise ConfigError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")
    try:
        encoder = create_encoder(backbone, weights="imagenet")
    except ConfigError:
        raise
    except Exception as exc:  # network / cache errors come in many types
        raise ConfigError(
            f"cannot load ImageNet weights for {backbone} ({type(exc).__name__}: {exc}); they are downloaded "
            "from the Hugging Face Hub on first use: go online once, or fill the HF cache "
            "(HF_HOME) from a machine that is, or use --init random"
        ) from exc
    return encoder, EncoderConfig(backbone=backbone, method="imagenet", dataset="imagenet")
