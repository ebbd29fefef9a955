"""Normalisation statistics shared by the data transforms and the encoder files.

ImageNet's per-channel mean and standard deviation of RGB values in ``[0, 1]``: the default
normalisation ``(x / 255 - mean) / std`` of every transform and of :class:`~sslzoo.models.encoders.EncoderConfig`.
"""

from __future__ import annotations

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
