"""In-process inference, stage by stage: a MoNuSeg field (1000x1000 H&E) to nuclei instances.

Per configuration the path ``sslzoo predict`` and the server run is split into its stages and each is
timed on the same image, the configurations interleaved repeat by repeat (so both see the same machine
load; the table shows the median over ``--repeat`` and the ratio old / new):

- decode: PNG bytes → RGB array (``sslzoo.serving.decode.decode_image``, with its header checks);
- tiling: padding / windows + normalisation into the network's input tensor;
- network: the U-Net forward passes (+ clamp), torch with ``--threads`` threads;
- stitching: windows back into one distance map (linear blending where they overlap);
- post-processing: smoothed distance map → seeded watershed → instance ids;
- encoding: the 16-bit PNG label map answered by the server.

Configurations: ``old`` is the code before issue 16, kept here as the reference (25 tiles of 256 px
overlapping by 64, NCHW, skimage's ``h_maxima`` for the seeds); ``torch`` is ``Segmenter.predict``
today on the torch runtime (the whole image in one pass when it fits ``inference_tile``, channels-last,
the exact fast h-maxima seeds); ``new`` is the same path on ``--runtime`` (default ``auto``: ONNX
Runtime on a CPU, what ``sslzoo predict`` and the server use). The script also reports the differences
of the outputs (distance map: max / mean absolute, instances: AJI+ old vs new, and AJI+ of each against
the ground truth when there is one; new vs torch: max |diff| and whether the instances are identical).

``--runtimes`` adds a table of the network alone on the padded whole image: torch eager (NCHW and
channels-last), ``torch.compile`` and ONNX Runtime (when ``onnxruntime`` + ``onnx`` are importable),
each with its largest absolute difference to eager. ``--seam`` checks the blend of the windowed path
on a 2x2 mosaic of fields (2000x2000, 4 windows of 1024) against the whole-mosaic output.

    .venv/bin/python bench/inference.py                          # nuclei default, 2 threads, 5 repeats
    .venv/bin/python bench/inference.py --threads 1 --repeat 3 --image path/to/field.png
    .venv/bin/python bench/inference.py --runtimes --seam
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DATA = Path(os.environ.get("SSLZOO_SHARED_DATA", REPO.parent / "shared" / "data"))
STAGES = ("decode", "tiling", "network", "stitching", "post-processing", "encoding")


# ------------------------------------------------------------------------------------ the old path


def old_windows(segmenter, image: np.ndarray):
    """Before issue 16: ``tile_size`` tiles overlapping by ``tile_overlap``, normalised one by one."""
    import torch

    from sslzoo.data.tiling import extract_tiles
    from sslzoo.data.transforms import normalize_to_tensor

    size = segmenter.config.tile_size
    tiles, grid = extract_tiles(image, size=size, overlap=min(segmenter.config.tile_overlap, size // 2))
    return torch.stack([normalize_to_tensor(t, segmenter.config.mean, segmenter.config.std) for t in tiles]), grid


_OLD_MODELS: dict[int, object] = {}


def old_network(segmenter, batch) -> np.ndarray:
    """NCHW batches of 8 under ``no_grad``, on a copy of the model kept in the default memory format."""
    import copy

    import torch

    model = _OLD_MODELS.get(id(segmenter))
    if model is None:
        model = _OLD_MODELS[id(segmenter)] = copy.deepcopy(segmenter.model).to(memory_format=torch.contiguous_format)
    outputs = np.empty((len(batch), *batch.shape[2:]), np.float32)
    with torch.no_grad():
        for start in range(0, len(batch), 8):
            out = model(batch[start : start + 8].contiguous())[:, 0].clamp_(min=0.0)
            outputs[start : start + len(out)] = out.numpy()
    return outputs


def old_stitch(outputs: np.ndarray, grid, height: int, width: int) -> np.ndarray:
    from sslzoo.data.tiling import stitch_tiles

    return stitch_tiles(outputs, grid, height, width, blend="linear").astype(np.float32)


def old_postprocess(distance: np.ndarray, params) -> np.ndarray:
    """The h-maxima branch before issue 16: skimage's h_maxima (a grey reconstruction of the whole image)."""
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    from sslzoo.models.postprocess import remove_small_and_relabel

    smooth = ndi.gaussian_filter(np.asarray(distance, np.float32), params.sigma)
    foreground = smooth > params.foreground_threshold
    if params.h is None:
        raise SystemExit("the old-path reference covers h-maxima seeds only (the nuclei default)")
    seeds, _ = ndi.label(h_maxima(smooth, params.h) & foreground)
    return remove_small_and_relabel(watershed(-smooth, seeds, mask=foreground), params.min_size)


# ------------------------------------------------------------------------------------ one run


def run_stages(segmenter, body: bytes, config: str) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Seconds per stage, the distance map and the labels of one image through ``config``."""
    from sslzoo.serving.decode import decode_image
    from sslzoo.serving.encode import encode_output

    times: dict[str, float] = {}

    def timed(stage: str, fn: Callable, *args):
        start = time.perf_counter()
        out = fn(*args)
        times[stage] = time.perf_counter() - start
        return out

    image = timed("decode", decode_image, body)
    height, width = image.shape[:2]
    if config == "old":
        batch, grid = timed("tiling", old_windows, segmenter, image)
        outputs = timed("network", old_network, segmenter, batch)
        distance = timed("stitching", old_stitch, outputs, grid, height, width)
        labels = timed("post-processing", old_postprocess, distance, segmenter.config.watershed)
    else:
        batch, grid = timed("tiling", segmenter.input_windows, image)
        outputs = timed("network", segmenter.run_windows, batch)
        distance = timed("stitching", segmenter.stitch, outputs, grid, height, width)
        labels = timed("post-processing", segmenter.postprocess, distance)
    timed("encoding", encode_output, labels, "instance", "nuclei", "png")
    times["total"] = sum(times.values())
    times["network input Mpx"] = float(batch.shape[0] * batch.shape[2] * batch.shape[3]) / 1e6
    return times, distance, labels


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def load_input(args) -> tuple[str, np.ndarray, np.ndarray | None]:
    from sslzoo.data.io import read_image, read_label_map

    if args.image is not None:
        return args.image.name, read_image(args.image), None
    images = sorted((args.data / "monuseg" / "train" / "images").glob("*.png"))
    if not images:
        from sslzoo.data.synthetic import synthetic_nuclei

        image, labels = synthetic_nuclei(1000, n=400)[:2]
        return "synthetic 1000x1000", image, labels
    mask = args.data / "monuseg" / "train" / "masks" / images[0].name
    return images[0].stem, read_image(images[0]), read_label_map(mask) if mask.is_file() else None


# ------------------------------------------------------------------------------------ extras


def runtimes(segmenter, image: np.ndarray, repeat: int, compile_too: bool) -> None:
    """The network alone on the padded whole image under each runtime."""
    import torch

    batch, _ = segmenter.input_windows(image)
    model = segmenter.model
    nchw = batch.contiguous()
    candidates: dict[str, Callable[[], np.ndarray]] = {}

    import copy

    model_nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def eager_nchw():
        with torch.inference_mode():
            return model_nchw(nchw).numpy()

    def eager_cl():
        with torch.inference_mode():
            return model_cl(batch).numpy()

    candidates["torch eager (NCHW)"] = eager_nchw
    candidates["torch eager (channels-last)"] = eager_cl
    if compile_too:
        compiled = torch.compile(model_cl, dynamic=False)

        def inductor():
            with torch.inference_mode():
                return compiled(batch).numpy()

        candidates["torch.compile (inductor)"] = inductor
    try:
        import onnxruntime as ort

        path = Path(os.environ.get("TMPDIR", "/tmp")) / "sslzoo-bench-unet.onnx"
        torch.onnx.export(model_nchw, (nchw,), str(path), dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: nchw.numpy()}
        candidates["ONNX Runtime (CPU)"] = lambda: session.run(None, feed)[0]
    except Exception as exc:  # not installed or not exportable: say so in the table
        print(f"ONNX Runtime: not measured ({type(exc).__name__}: {str(exc)[:120]})")
    reference = eager_nchw()
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    diffs: dict[str, float] = {}
    first: dict[str, float] = {}
    for name, fn in candidates.items():  # first call (compilation, session warm-up)
        start = time.perf_counter()
        diffs[name] = float(np.abs(fn() - reference).max())
        first[name] = time.perf_counter() - start
    for _ in range(repeat):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    print(f"\nnetwork alone, one {tuple(batch.shape)} input, {torch.get_num_threads()} threads, median of {repeat}")
    print(f"{'runtime':30} {'median s':>9} {'min s':>7} {'first call s':>13} {'max |diff| vs eager':>20}")
    base = statistics.median(samples["torch eager (NCHW)"])
    for name in candidates:
        med = statistics.median(samples[name])
        print(
            f"{name:30} {med:>9.3f} {min(samples[name]):>7.3f} {first[name]:>13.1f} {diffs[name]:>20.2e}"
            f"   ({base / med:.2f}x eager NCHW)"
        )


def seam(segmenter, image: np.ndarray) -> None:
    """Blend check: a 2x2 mosaic (2 * side) run whole vs in 1024 windows overlapping by tile_overlap."""
    mosaic = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]]) if image.ndim == 2 else None
    if mosaic is None:
        top = np.concatenate([image, image[:, ::-1]], axis=1)
        mosaic = np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))
    height, width = mosaic.shape[:2]
    windowed = segmenter.predict_map(mosaic)
    limit = segmenter.config.inference_tile
    segmenter.config.inference_tile = max(height, width) + 32
    try:
        whole = segmenter.predict_map(mosaic)
    finally:
        segmenter.config.inference_tile = limit
    size, overlap = segmenter.window_geometry(height, width)
    diff = np.abs(windowed - whole)
    print(f"\nseam: {height}x{width} mosaic, windows of {size} overlapping by {overlap} vs one whole pass")
    print(f"  max |diff| {diff.max():.4f}, mean {diff.mean():.5f}, 99.9th percentile {np.percentile(diff, 99.9):.4f}")
    labels_w, labels_a = segmenter.postprocess(windowed), segmenter.postprocess(whole)
    from sslzoo.metrics.segmentation import aji_plus

    print(
        f"  instances: {labels_w.max()} windowed, {labels_a.max()} whole, "
        f"AJI+ between them {aji_plus(labels_w, labels_a):.4f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nuclei", help="segmenter: alias, zoo name or folder (default: nuclei)")
    parser.add_argument("--image", type=Path, default=None, help="an RGB image (default: the first MoNuSeg field)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per configuration (after one warm-up)")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["old", "torch", "new"],
        choices=["old", "torch", "new"],
        help="old: before issue 16; torch: today's path on the torch runtime; new: today's path on --runtime",
    )
    parser.add_argument(
        "--runtime", default="auto", choices=["auto", "torch", "onnxruntime"], help="the runtime of 'new' (auto)"
    )
    parser.add_argument("--runtimes", action="store_true", help="also compare runtimes for the network alone")
    parser.add_argument("--compile", action="store_true", help="with --runtimes: include torch.compile (slow start)")
    parser.add_argument("--seam", action="store_true", help="also check the windowed blend on a 2x2 mosaic")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sslzoo.hub.resolve import load_segmenter
    from sslzoo.metrics.segmentation import aji_plus

    segmenters = {"old": load_segmenter(args.model), "torch": load_segmenter(args.model)}
    segmenters["new"] = load_segmenter(args.model)
    chosen = segmenters["new"].use_runtime(args.runtime)
    segmenter = segmenters["torch"]
    name, image, truth = load_input(args)
    body = png_bytes(image)
    load = os.getloadavg()
    print(
        f"model {args.model} | image {name} {image.shape[1]}x{image.shape[0]} | torch {torch.__version__}, "
        f"{args.threads} threads | CPU cores {os.cpu_count()} | load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        f" | runtime of 'new': {chosen}"
    )
    results: dict[str, list[dict[str, float]]] = {c: [] for c in args.configs}
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for config in args.configs:  # warm-up (first-call allocations, lazy imports)
        _, distance, labels = run_stages(segmenters[config], body, config)
        outputs[config] = (distance, labels)
    for _ in range(args.repeat):
        for config in args.configs:
            results[config].append(run_stages(segmenters[config], body, config)[0])

    rows = [*STAGES, "total", "network input Mpx"]
    header = f"{'stage':18}" + "".join(f"{c + ' s':>10}" for c in args.configs)
    others = [c for c in args.configs if c != "old"] if "old" in args.configs else []
    print(f"\nmedian of {args.repeat} runs, configurations interleaved")
    print(header + "".join(f"{'old/' + c:>11}" for c in others))
    for row in rows:
        values = {c: statistics.median(r[row] for r in results[c]) for c in args.configs}
        line = f"{row:18}" + "".join(f"{values[c]:>10.3f}" for c in args.configs)
        line += "".join(f"{values['old'] / values[c]:>10.2f}x" if values[c] > 0 else f"{'':>11}" for c in others)
        print(line)
    end = os.getloadavg()
    print(f"load average after: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")

    if "old" in outputs and "new" in outputs:
        (d_old, l_old), (d_new, l_new) = outputs["old"], outputs["new"]
        diff = np.abs(d_old - d_new)
        print(
            f"\nold vs new: distance map max |diff| {diff.max():.4f}, mean {diff.mean():.5f}; "
            f"instances {l_old.max()} vs {l_new.max()}, AJI+(new, old) {aji_plus(l_new, l_old):.4f}"
        )
        same_map = old_postprocess(d_new, segmenter.config.watershed)
        print(f"post-processing alone on the same map: identical labels {np.array_equal(same_map, l_new)}")
        if truth is not None:
            print(f"AJI+ against the ground truth: old {aji_plus(l_old, truth):.4f}, new {aji_plus(l_new, truth):.4f}")
    if "torch" in outputs and "new" in outputs and chosen != "torch":
        (d_torch, l_torch), (d_new, l_new) = outputs["torch"], outputs["new"]
        print(
            f"{chosen} vs torch: distance map max |diff| {np.abs(d_torch - d_new).max():.2e}; "
            f"identical instances {np.array_equal(l_torch, l_new)}"
        )
    if args.runtimes:
        runtimes(segmenter, image, args.repeat, args.compile)
    if args.seam:
        seam(segmenter, image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
