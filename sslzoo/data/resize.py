"""Whole-image resizing for semantic models trained on squeezed images (``resize_to``).

Training squeezes each image to ``size x size`` (:func:`resize_image`, area interpolation; masks with
:func:`resize_labels`, nearest neighbour); inference squeezes the same way and brings the per-pixel
output back to the image's own size with :func:`resize_map` (bilinear). Aspect ratios are not kept.
"""

from __future__ import annotations

import numpy as np


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Squeeze an ``H x W x C`` image to ``size x size`` (area interpolation; aspect ratio not kept)."""
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Squeeze a label map to ``size x size`` with nearest-neighbour sampling (labels stay labels)."""
    import cv2

    return cv2.resize(labels.astype(np.int32), (size, size), interpolation=cv2.INTER_NEAREST)


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float map ``(h, w)`` resized to ``(height, width)`` with bilinear interpolation, as float32."""
    import cv2

    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
