"""The ranking service behind ``POST /predictions/rank``: labelled images → ``sslzoo.downstream.rank.rank_encoders``.

Input (multipart/form-data, like ``/predictions/evaluate``): ``task`` (``semantic`` | ``instance``, required),
``image_<k>`` + ``mask_<k>`` pairs, or one ``archive`` field (a zip holding ``images/`` and ``masks/``, matched by
file stem); optional ``encoders`` (comma-separated names; default every encoder available on the server: the
packaged ones, ``$SSLZOO_ZOO_DIR`` entries and ``random``), ``budget`` (``quick`` | ``standard`` | ``thorough``),
``probe`` (``readout`` | ``finetune``) and ``seed``. Encoder names are zoo names or baselines only: a client never
names a server path.

Work per request is bounded before anything is decoded (each a 413 naming its variable):

=============================== ========= ==================================================
``SSLZOO_RANK_MAX_IMAGES``      40        labelled images per request
``SSLZOO_RANK_MAX_PIXELS``      8000000   pixels of all images of one request (from headers)
=============================== ========= ==================================================

plus the per-image ``SSLZOO_MAX_PIXELS`` and the archive limits of :mod:`sslzoo.serving.limits`. Loaded encoders
are kept between requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sslzoo.errors import ConfigError, DataError, TooLargeError
from sslzoo.serving.decode import decode_image, decode_label_map, header_pixels
from sslzoo.serving.limits import Limits, _env_number
from sslzoo.serving.services import _natural_key, _short, check_pairs, read_archive_folders

RANK = "rank"
DEFAULT_RANK_MAX_IMAGES = 40
DEFAULT_RANK_MAX_PIXELS = 8_000_000
FIELDS_HELP = (
    "send multipart/form-data with task=semantic|instance and image_<k> + mask_<k> pairs (or one 'archive' zip "
    "holding images/ and masks/); optional: encoders (comma-separated), budget (quick|standard|thorough), "
    "probe (readout|finetune), seed"
)


def _text(value: object, name: str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(f"field {name!r} is not UTF-8 text") from exc
    return str(value).strip()


class RankService:
    """Rank encoders on a request's labelled images; loaded encoders are cached by name."""

    def __init__(self, max_pixels: int | None = None, device: str | None = None) -> None:
        self.max_pixels = max_pixels
        self.device = device
        self.limits = Limits.from_env(max_pixels)
        self.max_images = int(_env_number("SSLZOO_RANK_MAX_IMAGES", DEFAULT_RANK_MAX_IMAGES))
        self.max_total_pixels = int(_env_number("SSLZOO_RANK_MAX_PIXELS", DEFAULT_RANK_MAX_PIXELS))
        self._encoders: dict[tuple[str, str, int], Any] = {}

    def _load(self, candidate: Any, backbone: str, seed: int) -> Any:
        from sslzoo.downstream.rank import load_candidate

        key = (candidate.spec, backbone, seed)
        if key not in self._encoders:
            loaded = load_candidate(candidate, backbone, seed)
            if self.device:
                loaded.module.to(self.device)
            self._encoders[key] = loaded
        return self._encoders[key]

    # -- inputs ----------------------------------------------------------------------------------------
    def rank_fields(self, fields: Mapping[str, object]) -> Any:
        """Rank on a multipart request (module docstring); returns a :class:`~sslzoo.downstream.rank.Ranking`."""
        from sslzoo.downstream.rank import BUDGETS, PROBES, RankSettings, rank_encoders
        from sslzoo.vocabulary import TASKS

        if "task" not in fields or not _text(fields["task"], "task"):
            raise ConfigError(f"field 'task' is missing; {FIELDS_HELP}")
        task = _text(fields["task"], "task")
        if task not in TASKS:
            raise ConfigError(f"unknown task {_short(task)!r}; choose {' or '.join(TASKS)}")
        budget = _text(fields["budget"], "budget") if "budget" in fields else "standard"
        if budget not in BUDGETS:
            raise ConfigError(f"unknown budget {_short(budget)!r}; choose {', '.join(BUDGETS)}")
        probe = _text(fields["probe"], "probe") if "probe" in fields else "readout"
        if probe not in PROBES:
            raise ConfigError(f"unknown probe {_short(probe)!r}; choose {' or '.join(PROBES)}")
        seed = 0
        if "seed" in fields:
            try:
                seed = int(_text(fields["seed"], "seed"))
            except ValueError as exc:
                raise ConfigError("field 'seed' must be an integer") from exc
        encoders = None
        if "encoders" in fields:
            encoders = [n.strip() for n in _text(fields["encoders"], "encoders").split(",") if n.strip()] or None
        images, masks = self._pairs(fields)
        self._check_budget(images, masks)
        keys = sorted(masks, key=_natural_key)
        decoded_images = [decode_image(images[k], self.max_pixels, f"image_{k}") for k in keys]
        decoded_masks = [decode_label_map(masks[k], self.max_pixels, f"mask_{k}") for k in keys]
        for key, image, mask in zip(keys, decoded_images, decoded_masks, strict=True):
            if image.shape[:2] != mask.shape[:2]:
                raise DataError(
                    f"image_{key}: size {image.shape[1]}x{image.shape[0]} (WxH) differs from mask_{key} "
                    f"({mask.shape[1]}x{mask.shape[0]}); send pairs of the same size"
                )
        settings = RankSettings.from_budget(budget, seed=seed, probe=probe)
        return rank_encoders(
            decoded_images, decoded_masks, task, encoders, settings, ids=keys, allow_paths=False, loader=self._load
        )

    def _pairs(self, fields: Mapping[str, object]) -> tuple[dict[str, object], dict[str, object]]:
        """``image_<k>`` / ``mask_<k>`` fields (or the archive's ``images/`` / ``masks/``), paired by ``<k>``."""
        if "archive" in fields:
            images, masks = self._archive(fields["archive"])
        else:
            images, masks = {}, {}
            for key, value in fields.items():
                prefix, _, suffix = key.partition("_")
                if suffix and prefix in ("image", "mask"):
                    (images if prefix == "image" else masks)[suffix] = value
        if not images and not masks:
            raise DataError(f"no labelled images in the request; {FIELDS_HELP}")
        if not masks:
            raise DataError(
                f"no masks: {len(images)} image(s) but no mask_<k> field (or masks/ folder); ranking needs the "
                "ground truth of every image"
            )
        check_pairs(images, masks, "image", name_limit=40)
        if len(masks) > self.max_images:
            raise TooLargeError(
                f"the request holds {len(masks)} labelled images; at most {self.max_images} are ranked per request "
                "(SSLZOO_RANK_MAX_IMAGES): a few dozen images are enough to rank encoders, send a subset"
            )
        return images, masks

    def _archive(self, data: object) -> tuple[dict[str, object], dict[str, object]]:
        folders = read_archive_folders(
            data, self.limits, ("images", "masks"), "send a zip file holding images/ and masks/", "send fewer images",
            show=_short,
        )  # fmt: skip
        if not folders["images"]:
            raise DataError("archive holds no images/ folder; put the images in images/ and their masks in masks/")
        return folders["images"], folders["masks"]

    def _check_budget(self, images: Mapping[str, object], masks: Mapping[str, object]) -> None:
        """413 when the headers announce more than ``SSLZOO_RANK_MAX_PIXELS`` image pixels in all."""
        total = 0
        for key, value in images.items():
            if isinstance(value, bytes | bytearray) and value:
                total += header_pixels(bytes(value), f"image_{key}")[0]
        if total > self.max_total_pixels:
            raise TooLargeError(
                f"the request holds {total:,} image pixels in {len(images)} images, over the limit of "
                f"{self.max_total_pixels:,} per ranking (SSLZOO_RANK_MAX_PIXELS); send fewer or smaller images "
                "(crops of 256-512 px show enough of the objects)"
            )
        del masks  # their sizes are checked against the images after decoding
