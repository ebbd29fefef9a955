"""Serving latency and throughput: ``sslzoo serve`` (front + TorchServe) vs in-process ``sslzoo predict``, same model.

For a 256x256 image (ISIC 2017) and a 1000x1000 image (MoNuSeg), N requests are sent to
``/predictions/<model>`` (PNG output) by 1, 4 and 16 concurrent httpx clients, through the
authenticating front (``front``) and, on loopback, straight to TorchServe behind it (``engine``),
so the difference of the two p50s is the latency the front adds; per level the
script reports p50 / p95 latency and throughput (requests per second). In the same run the
in-process path (``SegmentationService.segment_bytes``, the code ``sslzoo predict`` runs per image:
decode → U-Net → watershed → PNG) is timed on the same bytes, interleaved with
one front and one engine request in blocks of ``--block`` calls per path (rotating the order; each block
after one untimed call, see ``interleaved``), ``--rounds`` times: the overhead table gives
per round the p50 of each path and the ratios front / in-process and engine / in-process, so a ratio
holds under the same machine load (the server's worker idles while the in-process call runs).

The model is a segmenter folder (``--model``) or, by default, a random-weight ResNet-50 U-Net
(instance task: distance map + watershed) with the zoo's default tiling (256 px tiles, 64 px overlap):
the speed of a trained model is the same. Images come from ../shared/data when present, else synthetic.

    .venv/bin/python bench/serve.py                       # full run
    .venv/bin/python bench/serve.py --quick               # fewer requests, resnet18
    .venv/bin/python bench/serve.py --model PATH --workers 2
    .venv/bin/python bench/serve.py --quick --soak 180      # + a 3-minute soak
    .venv/bin/python bench/serve.py --model nuclei --clients 1 --rounds 3 --requests 24 --large-requests 8

``--soak SECONDS`` then keeps 4 clients sending the small image for that long, one request in
five a bad one (garbage, empty, truncated PNG), and samples the RSS of the TorchServe worker
processes every 10 s: the soak table shows requests, 2xx / 4xx / 5xx counts, 401s (a valid key
refused: must stay 0) and worker memory, so a leak, a crashing worker or expiring credentials show.
``--token-expiration-min 2`` writes that TorchServe setting into the config (TorchServe's token
auth is off behind the front, so nothing may expire): a soak longer than 120 s crosses it.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from sslzoo.serving.server import free_ports

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def load_images(data: Path) -> dict[str, bytes]:
    """``{"256x256": png, "1000x1000": png}`` from ISIC 2017 / MoNuSeg, else synthetic nuclei."""
    from sslzoo.data.io import read_image

    images: dict[str, bytes] = {}
    isic = sorted((data / "isic2017" / "val" / "images").glob("*.jpg"))[:1]
    monuseg = sorted((data / "monuseg" / "train" / "images").glob("*.png"))[:1]
    if isic:
        images["256x256 (ISIC 2017)"] = png_bytes(read_image(isic[0]))
    if monuseg:
        images["1000x1000 (MoNuSeg)"] = png_bytes(read_image(monuseg[0]))
    if len(images) < 2:
        from sslzoo.data.synthetic import synthetic_nuclei

        images = {
            f"{size}x{size} (synthetic)": png_bytes(synthetic_nuclei(size, n=size // 8)[0]) for size in (256, 1000)
        }
    return images


def make_model(folder: Path, backbone: str) -> Path:
    import segmentation_models_pytorch as smp
    import torch

    from sslzoo.models.segmenter import Segmenter, SegmenterConfig

    torch.manual_seed(0)
    unet = smp.Unet(backbone, encoder_weights=None, in_channels=3, classes=1)
    return Segmenter(unet, SegmenterConfig(task="instance", backbone=backbone)).save_pretrained(folder)


def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_clients(url: str, key: str, body: bytes, clients: int, requests: int) -> tuple[list[float], float, int]:
    """Send ``requests`` POSTs from ``clients`` threads; returns latencies (s), wall time (s), failures."""
    import httpx

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/png", "Accept": "image/png"}
    # one keep-alive connection per client thread, opened before timing: a client's steady state
    # (httpx.post would build a client, SSL context included, and a connection per request: ~25 ms)
    local = threading.local()
    opened: list = []

    def one(_: int) -> tuple[float, bool]:
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=600)
            opened.append(local.http)
        start = time.perf_counter()
        response = local.http.post(url, content=body, headers=headers)
        return time.perf_counter() - start, response.status_code == 200

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    for http in opened:
        http.close()
    return [r[0] for r in results], wall, sum(not ok for _, ok in results)


def interleaved(
    service, urls: list[str], key: str, body: bytes, n: int, block: int = 4
) -> tuple[list[list[float]], list[list[float]]]:
    """``n`` timed calls per path (in process, then each URL) in blocks of ``block``, the block order rotating.

    Each block starts with one untimed *transition* call: the first call after the in-process one pays
    for the bench process's inference threads still winding down on the shared cores (measured: the
    HTTP call right after an in-process call is 10-15 ms slower at 256^2, the one after another HTTP call
    is not), which is an artefact of timing both paths in one process, not a cost a client sees.
    Returns (latencies per path, transition latencies per path), in seconds.
    """
    import httpx

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/png", "Accept": "image/png"}
    paths = 1 + len(urls)
    latencies: list[list[float]] = [[] for _ in range(paths)]
    transitions: list[list[float]] = [[] for _ in range(paths)]
    with httpx.Client(timeout=600) as http:

        def call(path: int) -> float:
            start = time.perf_counter()
            if path == 0:
                service.segment_bytes(body, "png")
            else:
                response = http.post(urls[path - 1], content=body, headers=headers)
                if response.status_code != 200:
                    raise SystemExit(f"{urls[path - 1]} answered {response.status_code}: {response.text[:300]}")
            return time.perf_counter() - start

        for i in range(-(-n // block)):
            for k in range(paths):
                path = (i + k) % paths
                transitions[path].append(call(path))
                for _ in range(min(block, n - i * block)):
                    latencies[path].append(call(path))
    return latencies, transitions


BAD_BODIES = (b"garbage", b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")  # not an image, empty, truncated


def worker_rss_mb(server_pid: int) -> float:
    """Summed RSS (MB) of TorchServe's Python worker processes under ``server_pid``."""
    import psutil

    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for child in children:
        try:
            if "model_service_worker" in " ".join(child.cmdline()):
                total += child.memory_info().rss
        except psutil.Error:
            continue
    return total / 1e6


def soak(url: str, key: str, body: bytes, seconds: float, server_pid: int, clients: int = 4) -> list[tuple]:
    """Requests for ``seconds`` from ``clients`` threads (1 in 5 bad); rows every 10 s: (t, n, 2xx, 4xx, 5xx, MB)."""
    import httpx

    counts = {"2xx": 0, "4xx": 0, "5xx": 0, "other": 0, "401": 0}
    lock, stop = threading.Lock(), threading.Event()

    def client(index: int) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/png", "Accept": "image/png"}
        with httpx.Client(timeout=120) as http:
            sent = 0
            while not stop.is_set():
                payload = BAD_BODIES[sent % len(BAD_BODIES)] if (sent + index) % 5 == 4 else body
                try:
                    status = http.post(url, content=payload, headers=headers).status_code
                    bucket = f"{status // 100}xx" if status // 100 in (2, 4, 5) else "other"
                    if status == 401:
                        with lock:
                            counts["401"] += 1
                except httpx.HTTPError:
                    bucket = "other"
                with lock:
                    counts[bucket] += 1
                sent += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    rows = [(0.0, 0, 0, 0, 0, 0, worker_rss_mb(server_pid))]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    while (elapsed := time.monotonic() - start) < seconds:
        time.sleep(min(10.0, seconds - elapsed))
        with lock:
            c = dict(counts)
        rows.append((time.monotonic() - start, sum(c.values()) - c["401"], c["2xx"], c["4xx"], c["5xx"] + c["other"],
                     c["401"], worker_rss_mb(server_pid)))  # fmt: skip
    stop.set()
    for thread in threads:
        thread.join(timeout=180)
    return rows


def start_server(
    model: Path, workdir: Path, workers: int, threads: int, token_expiration: int | None = None
) -> tuple[subprocess.Popen, int, int]:
    """``sslzoo serve`` on free ports; returns (process, front port, engine port)."""
    ports = free_ports(6)
    command = [
        sys.executable, "-m", "sslzoo", "serve", "--models", f"bench={model}",
        "--inference-port", str(ports[0]), "--management-port", str(ports[1]), "--metrics-port", str(ports[2]),
        "--engine-port", str(ports[5]),
        "--grpc-inference-port", str(ports[3]), "--grpc-management-port", str(ports[4]),
        "--workers", str(workers), "--workdir", str(workdir), "--log-file", str(workdir.parent / "torchserve.log"),
    ]  # fmt: skip
    env = dict(os.environ, SSLZOO_TORCH_THREADS=str(threads))
    if token_expiration:
        template = Path(__file__).resolve().parents[1] / "docker" / "config.properties"
        config = workdir.parent / "ts.properties"
        config.write_text(template.read_text() + f"token_expiration_min={token_expiration}\n")
        env["SSLZOO_TS_CONFIG"] = str(config)
    out = workdir.parent / "serve.out"
    process = subprocess.Popen(command, env=env, stdout=out.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while b"sslzoo: READY" not in (out.read_bytes() if out.exists() else b""):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"server did not start:\n{out.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)
    return process, ports[0], ports[5]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="segmenter folder (default: random ResNet-50 U-Net)")
    parser.add_argument("--backbone", default="resnet50", help="backbone of the default random model")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16], help="concurrency levels (none: skip)")
    parser.add_argument("--requests", type=int, default=32, help="requests per level for the small image")
    parser.add_argument("--large-requests", type=int, default=16, help="requests per level for the large image")
    parser.add_argument("--workers", type=int, default=1, help="TorchServe workers")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="torch threads")
    parser.add_argument("--quick", action="store_true", help="resnet18, 8/4 requests per level")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="then soak for SECONDS (0: none)")
    parser.add_argument("--token-expiration-min", type=int, default=None, help="TorchServe token expiry to set")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process timings")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the interleaved overhead measurement")
    parser.add_argument(
        "--warmup", type=int, default=30, help="untimed requests per path before timing (a fifth for the large image)"
    )
    parser.add_argument(
        "--block", type=int, default=4, help="timed calls per path in a row (after 1 untimed) in the overhead table"
    )
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.requests, args.large_requests = "resnet18", 8, 4

    import torch

    torch.set_num_threads(args.threads)
    from sslzoo.serving.services import SegmentationService

    root = Path(tempfile.mkdtemp(prefix="sslzoo-bench-serve-"))
    model = args.model or make_model(root / "model", args.backbone)
    images = load_images(args.data)
    print(
        f"model: {model} | torch threads {args.threads} | TorchServe workers {args.workers} | "
        f"CPU cores {os.cpu_count()} | cuda {torch.cuda.is_available()} | load {load_text()}"
    )

    service = None if args.no_in_process else SegmentationService.load("bench", model)
    rows = []
    overhead: list[tuple[str, int, list[list[float]], list[list[float]]]] = []

    workdir = root / "work"
    process, port, engine_port = start_server(model, workdir, args.workers, args.threads, args.token_expiration_min)
    try:
        key = next(line.strip() for line in (workdir / "api-keys.txt").read_text().splitlines() if line[:1] != "#")
        url = f"http://127.0.0.1:{port}/predictions/bench"
        engine = f"http://127.0.0.1:{engine_port}/predictions/bench"
        for index, (label, body) in enumerate(images.items()):
            n = args.requests if index == 0 else args.large_requests
            # steady state, not a fresh server's first requests (TorchServe's JVM compiles its hot paths early on)
            warm = max(1, args.warmup if index == 0 else args.warmup // 5)
            run_clients(url, key, body, 1, warm)
            run_clients(engine, key, body, 1, warm)
            if service is not None:
                for _ in range(warm):
                    service.segment_bytes(body, "png")
                for round_ in range(1, args.rounds + 1):
                    timed, switched = interleaved(service, [url, engine], key, body, n, args.block)
                    overhead.append((label, round_, timed, switched))
            for clients in args.clients:
                # alternate front / engine per level, so both see the same machine load
                for path, target in (("front (sslzoo serve)", url), ("engine (TorchServe direct)", engine)):
                    latencies, wall, failures = run_clients(target, key, body, clients, max(n, clients))
                    rows.append((label, path, clients, latencies, wall, failures))
        soak_rows = soak(url, key, next(iter(images.values())), args.soak, process.pid) if args.soak > 0 else []
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'image':22} {'path':28} {'clients':>7} {'n':>4} {'p50 ms':>9} {'p95 ms':>9} {'req/s':>7} {'fail':>4}")
    for label, path, clients, latencies, wall, failures in sorted(rows, key=lambda r: (r[0], r[2], r[1])):
        print(
            f"{label:22} {path:28} {clients:>7} {len(latencies):>4} {1000 * statistics.median(latencies):>9.0f} "
            f"{1000 * percentile(latencies, 95):>9.0f} {len(latencies) / wall:>7.2f} {failures:>4}"
        )
    if overhead:
        print(
            f"\noverhead: 1 client, in-process / front / engine interleaved, {args.rounds} rounds (load {load_text()})"
        )
        print(f"{'image':22} {'round':>5} {'n':>4} {'in-process p50':>15} {'front p50':>10} {'engine p50':>11} "
              f"{'front/in-proc':>14} {'engine/in-proc':>15} {'paired front/in-proc':>21}")  # fmt: skip
        for label, round_, (inproc, front, direct), _ in overhead:
            base = statistics.median(inproc)
            # each request's ratio to the in-process call at the same place in its block: robust to drifting load
            paired = statistics.median(f / i for f, i in zip(front, inproc, strict=True))
            print(
                f"{label:22} {round_:>5} {len(inproc):>4} {1000 * base:>13.0f}ms"
                f" {1000 * statistics.median(front):>8.0f}ms"
                f" {1000 * statistics.median(direct):>9.0f}ms {statistics.median(front) / base:>13.3f}x"
                f" {statistics.median(direct) / base:>14.3f}x {paired:>20.3f}x"
            )
        print("untimed first call of each block (p50 over all rounds; after a switch of path):")
        for label in dict.fromkeys(row[0] for row in overhead):
            firsts = [sum((row[3][k] for row in overhead if row[0] == label), []) for k in range(3)]
            print(
                f"  {label:22} in-process {1000 * statistics.median(firsts[0]):.0f}ms"
                f" front {1000 * statistics.median(firsts[1]):.0f}ms engine {1000 * statistics.median(firsts[2]):.0f}ms"
            )
    if soak_rows:
        first = next(iter(images))
        print(f"\nsoak: {args.soak:.0f} s, 4 clients, {first} image, 1 request in 5 bad (garbage / empty / truncated)")
        print(f"{'t s':>6} {'requests':>9} {'2xx':>6} {'4xx':>6} {'5xx+err':>8} {'401':>5} {'worker RSS MB':>14}")
        for t, n, ok, bad, failed, refused, rss in soak_rows:
            print(f"{t:>6.0f} {n:>9} {ok:>6} {bad:>6} {failed:>8} {refused:>5} {rss:>14.0f}")
        memory = [row[6] for row in soak_rows[1:]]
        if len(memory) >= 2:
            print(
                f"worker RSS: first {memory[0]:.0f} MB, last {memory[-1]:.0f} MB, max {max(memory):.0f} MB; "
                f"5xx/errors {soak_rows[-1][4]}; 401 for the valid key {soak_rows[-1][5]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
