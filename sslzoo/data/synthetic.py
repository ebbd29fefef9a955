"""Synthetic images with known ground truth for tests and demos; deterministic for a seed.

* :func:`synthetic_nuclei` — H&E-like tile (pink stroma, purple nuclei) with an instance label map;
* :func:`synthetic_lesion` — dermoscopy-like image (skin tone, one brown lesion) with a 0/1 mask;
* :func:`synthetic_two_class_images` — two texture classes (blobs vs stripes) for SSL sanity checks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import ellipse

from sslzoo.data.targets import relabel_contiguous
from sslzoo.errors import ConfigError

_STROMA_RGB = np.array([232.0, 180.0, 208.0])  # eosin pink
_NUCLEUS_RGB = np.array([96.0, 56.0, 140.0])  # haematoxylin purple
_SKIN_RGB = np.array([222.0, 168.0, 140.0])
_LESION_RGB = np.array([120.0, 72.0, 48.0])


def _check_size(size: int, minimum: int = 16) -> None:
    if size < minimum:
        raise ConfigError(f"synthetic images need size >= {minimum} pixels, got {size}")


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth noise with zero mean and unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-12)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def synthetic_nuclei(
    size: int = 256, n: int = 20, seed: int = 0, touching: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """H&E-like ``uint8`` image ``(size, size, 3)`` and ``int64`` labels ``1..N`` (N <= n).

    Nuclei are rotated ellipses with radii ~ size/40..size/20 placed without overlap; with
    ``touching`` every second nucleus is attached to the previous one (their outlines share a
    border), so instance separation is exercised. Fewer than ``n`` objects are returned only
    when the image has no room left.
    """
    _check_size(size)
    if n < 0:
        raise ConfigError(f"number of nuclei must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), dtype=np.int64)
    r_lo, r_hi = max(2.0, size / 40), max(3.0, size / 20)
    placed: list[tuple[float, float, float, float]] = []  # centre y, x, outer and inner radius

    def free(cy: float, cx: float, r: float, ignore: int | None = None) -> bool:
        inside = r <= cy <= size - 1 - r and r <= cx <= size - 1 - r
        return inside and all(
            np.hypot(cy - py, cx - px) > r + pr + 2 for k, (py, px, pr, _) in enumerate(placed) if k != ignore
        )

    for _ in range(n):
        ry, rx = rng.uniform(r_lo, r_hi, size=2)
        angle = rng.uniform(-np.pi, np.pi)
        r = max(ry, rx)
        attach = touching and len(placed) % 2 == 1
        for _attempt in range(200):
            if attach:
                py, px, _, inner = placed[-1]
                theta = rng.uniform(0, 2 * np.pi)
                # the inscribed circles overlap, so the ellipses do; painting over leaves a shared border
                dist = 0.85 * (inner + min(ry, rx))
                cy, cx = py + dist * np.sin(theta), px + dist * np.cos(theta)
                ok = free(cy, cx, r, ignore=len(placed) - 1)
            else:
                cy, cx = rng.uniform(r, size - 1 - r, size=2)
                ok = free(cy, cx, r)
            if ok:
                break
        else:
            continue
        rr, cc = ellipse(cy, cx, ry, rx, shape=labels.shape, rotation=angle)
        labels[rr, cc] = len(placed) + 1
        placed.append((cy, cx, r, min(ry, rx)))
    labels = _keep_largest_fragments(labels)

    image = _STROMA_RGB + 12.0 * _texture(rng, (size, size), 2.0)[..., None]
    nucleus = labels > 0
    shade = 1.0 + 0.12 * _texture(rng, (size, size), 1.0)
    image[nucleus] = _NUCLEUS_RGB * shade[nucleus][:, None]
    image = ndimage.gaussian_filter(image, sigma=(0.8, 0.8, 0))
    image += 4.0 * rng.standard_normal(image.shape)
    return _to_uint8(image), labels


def _keep_largest_fragments(labels: np.ndarray) -> np.ndarray:
    """Drop pixels of an object that painting split into several pieces (keep its largest piece)."""
    out = labels.copy()
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        parts, count = ndimage.label(labels[box] == index)
        if count > 1:
            largest = 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
            region = out[box]
            region[(parts > 0) & (parts != largest)] = 0
    return relabel_contiguous(out)


def synthetic_lesion(size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Skin-like ``uint8`` image ``(size, size, 3)`` with one irregular brown lesion; ``uint8`` 0/1 mask.

    The lesion outline is ``r(θ) = r0 (1 + Σ_k a_k cos(kθ + φ_k))`` for k = 2..5 around a
    jittered centre, r0 ~ size/6..size/3.5.
    """
    _check_size(size)
    rng = np.random.default_rng(seed)
    cy, cx = size / 2 + rng.uniform(-size / 10, size / 10, size=2)
    r0 = rng.uniform(size / 6, size / 3.5)
    amps = rng.uniform(0.0, 0.12, size=4)
    phases = rng.uniform(0, 2 * np.pi, size=4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = np.arctan2(yy - cy, xx - cx)
    radius = r0 * (1 + sum(a * np.cos(k * theta + p) for k, a, p in zip(range(2, 6), amps, phases, strict=True)))
    mask = (np.hypot(yy - cy, xx - cx) <= radius).astype(np.uint8)

    image = _SKIN_RGB + 10.0 * _texture(rng, (size, size), 3.0)[..., None]
    soft = ndimage.gaussian_filter(mask.astype(np.float64), sigma=max(1.0, size / 128))[..., None]
    lesion = _LESION_RGB * (1.0 + 0.2 * _texture(rng, (size, size), 2.0))[..., None]
    image = (1 - soft) * image + soft * lesion
    image += 3.0 * rng.standard_normal(image.shape)
    return _to_uint8(image), mask


def synthetic_two_class_images(n: int = 64, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, size, size, 3) uint8`` and ``int64`` labels: 0 = blobs, 1 = stripes.

    Classes alternate (0, 1, 0, ...). Both share the same random colour pair per image, so only
    texture tells them apart: Gaussian blobs at random places vs a sinusoidal grating of random
    orientation, period and phase.
    """
    _check_size(size, minimum=8)
    if n < 1:
        raise ConfigError(f"need at least one image, got n = {n}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    labels = np.arange(n, dtype=np.int64) % 2
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        if label == 0:
            pattern = np.zeros((size, size))
            for _ in range(int(rng.integers(3, 7))):
                cy, cx = rng.uniform(0, size, size=2)
                sigma = rng.uniform(size / 16, size / 8)
                pattern += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
            pattern = np.clip(pattern, 0, 1)
        else:
            angle = rng.uniform(0, np.pi)
            period = rng.uniform(size / 8, size / 4)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.cos(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
            pattern = 0.5 + 0.5 * wave
        low, high = rng.uniform(20, 110, size=3), rng.uniform(150, 240, size=3)
        image = low + pattern[..., None] * (high - low) + 6.0 * rng.standard_normal((size, size, 3))
        images[i] = _to_uint8(image)
    return images, labels
