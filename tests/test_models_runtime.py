"""The inference runtime (sslzoo/models/runtime.py): ONNX Runtime gives the torch path's outputs, on real images."""

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from sslzoo.data.io import read_image
from sslzoo.data.samples import sample_dataset_path
from sslzoo.errors import ConfigError
from sslzoo.hub.resolve import load_segmenter
from sslzoo.metrics.segmentation import aji_plus
from sslzoo.models import runtime as runtime_module
from sslzoo.models.runtime import resolve_runtime
from sslzoo.models.segmenter import Segmenter, SegmenterConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sample(kind: str, index: int = 0) -> np.ndarray:
    return read_image(sorted((sample_dataset_path(kind) / "train" / "images").iterdir())[index])


def _pair(alias: str) -> tuple[Segmenter, Segmenter]:
    eager, onnx = load_segmenter(alias), load_segmenter(alias)
    assert onnx.use_runtime("onnxruntime") == "onnxruntime"
    return eager, onnx


def test_onnxruntime_nuclei_default_gives_the_torch_instances_on_monuseg_fields():
    eager, onnx = _pair("nuclei")
    for index in (0, 1):
        image = _sample("monuseg", index)
        reference, fast = eager.predict_map(image), onnx.predict_map(image)
        assert eager.runtime == "torch"
        assert np.abs(reference - fast).max() < 1e-3  # the tolerance (measured: ~1e-6)
        labels, fast_labels = eager.postprocess(reference), onnx.postprocess(fast)
        assert labels.max() > 5  # real nuclei found, so the comparison means something
        assert aji_plus(fast_labels, labels) >= 0.99


def test_onnxruntime_lesion_default_gives_the_torch_mask_on_an_isic_image():
    eager, onnx = _pair("lesion")
    image = _sample("isic2017")
    reference, fast = eager.predict_map(image), onnx.predict_map(image)
    assert reference.shape == fast.shape == image.shape[:2]
    assert np.abs(reference - fast).max() < 1e-3
    assert np.mean(eager.postprocess(reference) != onnx.postprocess(fast)) < 1e-4


def _random_segmenter(task: str = "instance") -> Segmenter:
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=1)
    return Segmenter(model, SegmenterConfig(task=task, backbone="resnet18", tile_size=64, tile_overlap=16))


def test_windowed_images_run_as_one_dynamic_batch_through_the_session():
    segmenter = _random_segmenter()
    segmenter.config.inference_tile = 64
    image = np.random.default_rng(1).integers(0, 255, (100, 150, 3), dtype=np.uint8)
    reference = segmenter.predict_map(image)
    segmenter.use_runtime("onnxruntime")
    calls: list[tuple[int, ...]] = []
    network = segmenter.network()
    original = network.session.run
    network.session.run = lambda names, feed: calls.append(feed["image"].shape) or original(names, feed)
    fast = segmenter.predict_map(image)
    assert calls and calls[0][0] > 1  # several windows in one call: the batch axis is dynamic
    np.testing.assert_allclose(fast, reference, atol=1e-4)


def test_changed_weights_are_re_exported_instead_of_answering_stale():
    segmenter = _random_segmenter("semantic")
    image = np.random.default_rng(2).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    segmenter.use_runtime("onnxruntime")
    before = segmenter.predict_map(image)
    with torch.no_grad():
        segmenter.model.segmentation_head[0].bias.add_(3.0)  # in place, as an optimiser step or load_state_dict
    after = segmenter.predict_map(image)
    assert np.abs(after - before).max() > 0.01
    segmenter.use_runtime("torch")
    np.testing.assert_allclose(segmenter.predict_map(image), after, atol=1e-4)


def test_runtime_choice_and_its_errors(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_runtime("auto", cpu) == "onnxruntime" and resolve_runtime(None, cpu) == "onnxruntime"
    assert resolve_runtime("auto", gpu) == "torch"  # the CPU wheel has no CUDA: a GPU keeps torch
    assert resolve_runtime(" Torch ", cpu) == "torch"
    with pytest.raises(ConfigError, match="CPU only.*cuda"):
        resolve_runtime("onnxruntime", gpu)
    with pytest.raises(ConfigError, match="unknown inference runtime 'tensorrt'.*auto, torch, onnxruntime"):
        resolve_runtime("tensorrt", cpu)
    monkeypatch.setattr(runtime_module, "onnxruntime_available", lambda: False)
    assert resolve_runtime("auto", cpu) == "torch"
    with pytest.raises(ConfigError, match="needs the onnxruntime and onnx packages"):
        resolve_runtime("onnxruntime", cpu)


def test_segmentation_service_uses_onnxruntime_unless_told_otherwise(monkeypatch):
    from sslzoo.serving.services import SegmentationService

    monkeypatch.delenv("SSLZOO_RUNTIME", raising=False)
    assert SegmentationService.load("nuclei", "nuclei").segmenter.runtime == "onnxruntime"
    monkeypatch.setenv("SSLZOO_RUNTIME", "torch")
    assert SegmentationService.load("nuclei", "nuclei").segmenter.runtime == "torch"
    assert SegmentationService.load("nuclei", "nuclei", runtime="onnxruntime").segmenter.runtime == "onnxruntime"
    monkeypatch.setenv("SSLZOO_RUNTIME", "openvino")
    with pytest.raises(ConfigError, match="unknown inference runtime"):
        SegmentationService.load("nuclei", "nuclei")
