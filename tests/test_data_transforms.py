"""SSL two-view and downstream transforms, and the pretraining dataset."""

from __future__ import annotations

import pickle

import albumentations as A
import numpy as np
import pytest
import torch

from sslzoo.data.io import write_image
from sslzoo.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from sslzoo.data.pretext_dataset import TwoViewDataset
from sslzoo.data.synthetic import synthetic_nuclei
from sslzoo.data.transforms import (
    HEStainJitter,
    TwoViews,
    downstream_transform,
    eval_transform,
    mocov2_view_augmentation,
    monuseg_view_augmentation,
    normalize_to_tensor,
    two_view_transform,
    view_augmentation,
)
from sslzoo.errors import ConfigError

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _steps(compose: A.Compose, kind: type) -> list:
    return [t for t in compose.transforms if type(t) is kind]


def test_monuseg_pipeline_has_the_authors_parameters() -> None:
    """Issue 12: one joint ColorJitter(0.6, 0.8, 0.8, 0.2, p=.8) and crop ratio (1, 1), as in ssl_monuseg.yaml."""
    aug = monuseg_view_augmentation(size=128)
    (crop,) = _steps(aug, A.RandomResizedCrop)
    assert crop.size == (128, 128) and tuple(crop.scale) == (0.2, 1.0) and crop.p == 1.0
    assert tuple(crop.ratio) == (1.0, 1.0)
    (jitter,) = _steps(aug, A.ColorJitter)
    assert tuple(jitter.brightness) == pytest.approx((0.4, 1.6)) and tuple(jitter.contrast) == pytest.approx((0.2, 1.8))
    assert tuple(jitter.saturation) == pytest.approx((0.2, 1.8)) and tuple(jitter.hue) == pytest.approx((-0.2, 0.2))
    assert jitter.p == 0.8
    (blur,) = _steps(aug, A.GaussianBlur)
    assert tuple(blur.sigma_limit) == (0.1, 2.0) and blur.p == 0.5
    assert [t.p for t in _steps(aug, A.HorizontalFlip) + _steps(aug, A.VerticalFlip)] == [0.5, 0.5]
    assert not _steps(aug, HEStainJitter)
    (stain,) = _steps(monuseg_view_augmentation(size=128, stain=0.05), HEStainJitter)
    assert stain.sigma == 0.05 and stain.p == 0.5


def test_he_stain_jitter_changes_stain_intensities_and_sigma_zero_is_identity() -> None:
    image, _ = synthetic_nuclei(size=64, n=8, seed=3)
    identity = HEStainJitter(sigma=0.0, p=1.0)
    assert np.array_equal(identity(image=image)["image"], image)
    tiny = HEStainJitter(sigma=1e-6, p=1.0)(image=image)["image"]  # the HED round trip itself
    assert tiny.dtype == np.uint8 and np.median(np.abs(tiny.astype(int) - image.astype(int))) <= 1
    jitter = HEStainJitter(sigma=0.3, p=1.0)
    jitter.set_random_seed(0)
    out = [jitter(image=image)["image"] for _ in range(3)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in out)
    assert not np.array_equal(out[0], out[1]) and np.abs(out[0].astype(int) - image.astype(int)).mean() > 1.0
    with pytest.raises(ConfigError, match="stain jitter"):
        HEStainJitter(sigma=1.5)
    with pytest.raises(ConfigError, match="H&E"):
        view_augmentation("isic2017", stain=0.05)


def test_mocov2_pipeline_has_its_parameters() -> None:
    aug = mocov2_view_augmentation()
    (crop,) = _steps(aug, A.RandomResizedCrop)
    assert crop.size == (256, 256) and tuple(crop.scale) == (0.2, 1.0)
    (jitter,) = _steps(aug, A.ColorJitter)
    assert tuple(jitter.brightness) == (0.6, 1.4) and tuple(jitter.contrast) == (0.6, 1.4)
    assert tuple(jitter.saturation) == (0.6, 1.4) and tuple(jitter.hue) == (-0.1, 0.1) and jitter.p == 0.8
    (gray,) = _steps(aug, A.ToGray)
    assert gray.p == 0.2
    (blur,) = _steps(aug, A.GaussianBlur)
    assert tuple(blur.sigma_limit) == (0.1, 2.0) and blur.p == 0.5
    assert [t.p for t in _steps(aug, A.HorizontalFlip)] == [0.5] and not _steps(aug, A.VerticalFlip)


def test_view_augmentation_by_dataset() -> None:
    assert len(_steps(view_augmentation("monuseg"), A.ColorJitter)) == 1
    assert len(_steps(view_augmentation("dsb2018"), A.ColorJitter)) == 1
    assert len(_steps(view_augmentation("monuseg", stain=0.05), HEStainJitter)) == 1
    assert len(_steps(view_augmentation("isic2017"), A.ColorJitter)) == 1
    assert len(_steps(view_augmentation("folder"), A.ToGray)) == 1
    with pytest.raises(ConfigError, match="monuseg"):
        view_augmentation("cifar")


@pytest.mark.parametrize("dataset", ["monuseg", "isic2017"])
def test_two_views_are_normalised_and_differ(dataset: str) -> None:
    image, _ = synthetic_nuclei(size=96, n=8, seed=1)
    views = two_view_transform(dataset, size=64)
    first, second = views(image)
    for view in (first, second):
        assert view.shape == (3, 64, 64) and view.dtype == torch.float32
        pixels = view * STD + MEAN  # back to 0..1
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert not torch.equal(first, second)
    # a grey input still gives 3 channels
    assert views(image[..., 0])[0].shape == (3, 64, 64)


def test_two_views_replay_under_a_seed_and_workers_get_their_own() -> None:
    """set_random_seed replays the same views; seed_worker_transform gives each loader worker its own stream."""
    from sslzoo.data.transforms import seed_worker_transform

    image, _ = synthetic_nuclei(size=96, n=8, seed=1)
    views = two_view_transform("monuseg", size=64)
    views.set_random_seed(3)
    first = views(image)
    views.set_random_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(first, views(image), strict=True))
    dataset = TwoViewDataset([image] * 2, views, size=96)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, num_workers=2, worker_init_fn=seed_worker_transform,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    (w0,), (w1,) = [batch[0] for batch in loader]  # the same image, one per worker
    assert not torch.equal(w0, w1)


def test_normalize_to_tensor_formula() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    tensor = normalize_to_tensor(image)
    expected = (image.astype(np.float64) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert tensor.shape == (3, 5, 7) and tensor.dtype == torch.float32
    assert np.allclose(tensor.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    custom = TwoViews(A.Compose([]), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image)[0]
    assert np.allclose(custom.permute(1, 2, 0).numpy(), image / 127.5 - 1, atol=1e-5)


def _pattern(size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rectangles as a mask, painted bright into a dark image, plus a float 'distance' map."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(size, dtype=np.int64)
    for k in range(1, 7):
        y, x = rng.integers(0, size[0] - 10), rng.integers(0, size[1] - 10)
        mask[y : y + rng.integers(4, 12), x : x + rng.integers(4, 12)] = k
    image = np.where(mask[..., None] > 0, 220, 30).astype(np.uint8).repeat(3, axis=-1)
    distance = (mask > 0) * rng.uniform(0.1, 1.0, size=size).astype(np.float32)
    return image, mask, distance


@pytest.mark.parametrize("shape", [(80, 90), (40, 50)])
def test_downstream_train_transform_keeps_image_and_targets_aligned(shape: tuple[int, int]) -> None:
    image, mask, distance = _pattern(shape, seed=shape[0])
    transform = downstream_transform(train=True, size=48)
    moved = 0
    for trial in range(12):
        out = transform(image=image, mask=mask, distance=distance)
        img, m, d = out["image"], out["mask"], out["distance"]
        assert img.shape == (3, 48, 48) and img.dtype == torch.float32
        assert m.shape == (48, 48) and d.shape == (48, 48) and d.dtype == torch.float32
        bright = (img * STD + MEAN).mean(0) > 0.5
        assert torch.equal(bright, m > 0), f"image and mask drifted apart in trial {trial}"
        assert torch.equal(d > 0, m > 0)
        # the float map moves with the mask: each object's values are a subset of the original ones
        for k in torch.unique(m)[1:].tolist():
            assert set(d[m == k].tolist()) <= set(distance[mask == k].tolist())
        moved += not torch.equal(m, torch.from_numpy(mask[:48, :48]).to(m.dtype))
    assert moved > 0


def test_downstream_eval_transform_only_normalises() -> None:
    image, mask, distance = _pattern((70, 45), seed=3)
    out = downstream_transform(train=False)(image=image, mask=mask, distance=distance)
    assert torch.allclose(out["image"], normalize_to_tensor(image), atol=1e-5)
    assert np.array_equal(out["mask"].numpy(), mask) and np.array_equal(out["distance"].numpy(), distance)


def test_eval_transform_resizes_shorter_side_and_centre_crops() -> None:
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, 50:150] = 255  # the centre square is white, the sides black
    out = eval_transform(size=32)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out * STD + MEAN, torch.ones(3, 32, 32), atol=1e-3)
    assert torch.equal(eval_transform(32)(image), out)  # deterministic


def _identity_pair(tile: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    tensor = torch.from_numpy(tile.copy())
    return tensor, tensor


def test_two_view_dataset_length_and_regions(tmp_path) -> None:
    big = np.zeros((1000, 1000, 3), dtype=np.uint8)
    assert len(TwoViewDataset([big], _identity_pair, size=256)) == 16
    assert len(TwoViewDataset([big[:256, :256]], _identity_pair, size=256)) == 1

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(100, 150, 3), dtype=np.uint8)
    small = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    path = write_image(tmp_path / "a.png", image)
    dataset = TwoViewDataset([path, small], _identity_pair, size=64)
    assert len(dataset) == 2 * 3 + 1  # rows 0, 36; columns 0, 64, 86; then one padded tile
    first, second = dataset[0]
    assert torch.equal(first, second) and np.array_equal(first.numpy(), image[:64, :64])
    assert np.array_equal(dataset[5][0].numpy(), image[36:100, 86:150])
    last = dataset[6][0].numpy()
    assert last.shape == (64, 64, 3) and np.array_equal(last[:20, :30], small)
    assert np.array_equal(last[20:22, :30], small[[18, 17]])  # reflect padding
    assert 0 in dataset._cache  # decoded once, then cached
    assert pickle.loads(pickle.dumps(dataset))._cache == {}  # workers start with an empty cache
    with pytest.raises(IndexError):
        dataset[7]


def test_seeded_views_depend_on_seed_epoch_and_item_only(tmp_path) -> None:
    import copy

    paths = [write_image(tmp_path / f"{i}.png", synthetic_nuclei(size=96, n=6, seed=i)[0]) for i in range(2)]
    dataset = TwoViewDataset(paths, two_view_transform("monuseg", size=48), size=48)
    dataset.seed_views(3, epoch=0)
    first = [dataset[i][0] for i in (0, 5)]
    _ = [dataset[i] for i in (1, 2, 7)]  # other draws in between change nothing
    assert all(torch.equal(a, dataset[i][0]) for a, i in zip(first, (0, 5), strict=True))
    assert not torch.equal(first[0], dataset[5][0])  # items differ
    dataset.seed_views(3, epoch=1)
    assert not torch.equal(first[0], dataset[0][0])  # a new epoch draws new views
    clone = copy.deepcopy(dataset)  # a pickle outside process start-up keeps a plain copy of the epoch
    assert torch.equal(clone[0][0], dataset[0][0])
    dataset.seed_views(None)
    assert not torch.equal(dataset[0][0], dataset[0][0])  # unseeded: the transform's own stream


def test_two_view_dataset_in_a_dataloader_with_workers(tmp_path) -> None:
    paths = [write_image(tmp_path / f"{i}.png", synthetic_nuclei(size=96, n=6, seed=i)[0]) for i in range(3)]
    dataset = TwoViewDataset(paths, two_view_transform("monuseg", size=48), size=48)
    assert len(dataset) == 3 * 4
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == 3
    v1, v2 = batches[0]
    assert v1.shape == v2.shape == (4, 3, 48, 48) and not torch.equal(v1, v2)


def test_two_view_dataset_resizes_whole_images_like_finetune_input_size(tmp_path) -> None:
    """Issue 12: pretraining and fine-tuning see one scale; resize_to squeezes the whole image before tiling."""
    image = np.zeros((600, 900, 3), np.uint8)
    image[:, 450:] = 255  # right half white
    path = tmp_path / "big.png"
    write_image(path, image)
    native = TwoViewDataset([path], two_view_transform("isic2017", size=64), size=64)
    assert len(native) == 10 * 15  # native resolution: 150 tiles of 64 px
    resized = TwoViewDataset([path], two_view_transform("isic2017", size=64), size=64, resize_to=64)
    assert len(resized) == 1  # the whole lesion image in one view, as finetune --input-size 64 sees it
    tile = resized.tile(0)
    assert tile.shape == (64, 64, 3) and tile[:, :30].max() < 10 and tile[:, 34:].min() > 245
    with pytest.raises(Exception, match="resize_to"):
        TwoViewDataset([path], two_view_transform("isic2017", size=64), size=64, resize_to=0)
