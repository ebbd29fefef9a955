"""Where a segmenter's U-Net forward pass runs at inference: torch eager or ONNX Runtime.

Everything around the forward pass (padding, windows, normalisation, stitching, sigmoid / clamp,
post-processing) is one code path in :class:`sslzoo.models.segmenter.Segmenter`; only the call
``network(batch) -> raw output`` is delegated to the runtime chosen here:

- ``torch``: the model itself, channels-last under ``torch.inference_mode`` (any device);
- ``onnxruntime``: the model exported once to ONNX (in memory, dynamic batch / height / width) and run
  by an ONNX Runtime CPU session. On the 2-core CPU it is ~2x faster than torch eager on a 1000x1000
  field with outputs within 1e-6 (docs/inference.md, ``bench/inference.py --runtimes``);
- ``auto`` (the default for serving and ``sslzoo predict``): ``onnxruntime`` on a CPU device when the
  package imports, else ``torch`` (a GPU keeps torch: the CPU wheel has no CUDA).

The exported session is a snapshot of the weights. :class:`OnnxNetwork` remembers the parameters'
in-place version counters at export and :meth:`OnnxNetwork.is_current` says when they moved
(an optimiser step, ``load_state_dict``), so a segmenter re-exports instead of answering with stale
weights.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Literal

import numpy as np
import torch

from sslzoo.errors import ConfigError

Runtime = Literal["auto", "torch", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnxruntime")
RUNTIME_ENV = "SSLZOO_RUNTIME"


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` (and ``onnx``, which the export needs) import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(requested: str | None, device: torch.device) -> Literal["torch", "onnxruntime"]:
    """The runtime to use for ``requested`` (``auto`` / None, ``torch``, ``onnxruntime``) on ``device``."""
    choice = (requested or "auto").strip().lower()
    if choice not in RUNTIMES:
        raise ConfigError(f"unknown inference runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
    if choice == "torch":
        return "torch"
    on_cpu = device.type == "cpu"
    if choice == "onnxruntime":
        if not on_cpu:
            raise ConfigError(
                f"the onnxruntime runtime runs on the CPU only, the segmenter is on {device}; "
                "use --runtime torch (or auto) on a GPU"
            )
        if not onnxruntime_available():
            raise ConfigError("the onnxruntime runtime needs the onnxruntime and onnx packages: pip install sslzoo")
        return "onnxruntime"
    return "onnxruntime" if on_cpu and onnxruntime_available() else "torch"


def _weights_version(model: torch.nn.Module) -> tuple[int, ...]:
    """The in-place version counter of every parameter and buffer (moves on any in-place write)."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple(int(t._version) for t in tensors) + (len(tensors),)


class OnnxNetwork:
    """An eval-mode CPU model exported to ONNX and run by an ONNX Runtime session.

    ``network(batch)`` takes a float32 ``(N, 3, H, W)`` tensor (H and W multiples of the model's
    stride) and returns the model's raw float32 output ``(N, C, H, W)`` as a tensor.
    """

    def __init__(self, model: torch.nn.Module, threads: int | None = None) -> None:
        import onnxruntime as ort

        model = model.eval()
        buffer = io.BytesIO()
        axes = {0: "batch", 2: "height", 3: "width"}
        was_channels_last = next(model.parameters()).is_contiguous(memory_format=torch.channels_last)
        model.to(memory_format=torch.contiguous_format)
        try:
            # callable inside inference mode; silences the TorchScript exporter's deprecation notice and tracer warnings
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                example = torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device)
                torch.onnx.export(
                    model,
                    (example,),
                    buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
                    dynamo=False,
                    input_names=["image"],
                    output_names=["output"],
                    dynamic_axes={"image": axes, "output": axes},
                )
        finally:
            if was_channels_last:
                model.to(memory_format=torch.channels_last)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session: Any = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.threads = options.intra_op_num_threads
        self._model = model
        self._version = _weights_version(model)

    def is_current(self, model: torch.nn.Module) -> bool:
        """True while ``model`` is the exported one with unchanged weights."""
        return model is self._model and _weights_version(model) == self._version

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        (output,) = self.session.run(None, {"image": array})
        return torch.from_numpy(output)
