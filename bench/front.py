"""Latency the REST front adds, isolated: the same requests straight to an engine and through the front.

The engine is a stand-in that answers every ``POST /predictions/<model>`` at once with a body the size
of a label-map PNG, so model time (seconds on a CPU, noisy on a shared machine) does not hide the
front's cost. Bodies: PNGs of a 256x256 and a 1000x1000 image (as in bench/serve.py). Sequential
requests from one keep-alive httpx client; reports p50 / p95 per path and the p50 difference.

    .venv/bin/python bench/front.py [--requests 200] [--flood 16]

``--flood N`` then sends N concurrent keyless 95 MiB POSTs (what took TorchServe's Java frontend from
754 MB to 2.5 GB when it checked keys after reading bodies) and reports this process's RSS before and
after, and what the clients got back.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(side: int) -> bytes:
    from PIL import Image

    from sslzoo.data.synthetic import synthetic_nuclei

    buffer = io.BytesIO()
    Image.fromarray(synthetic_nuclei(side, n=side // 8)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def start_engine(answer_bytes: dict[int, bytes]) -> tuple[object, int]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def predictions(request: Request) -> Response:
        body = await request.body()
        return Response(answer_bytes.get(len(body), b"\x89PNG"), media_type="image/png")

    async def describe(request: Request) -> Response:
        return JSONResponse([{"workers": [{"status": "READY"}]}])

    app = Starlette(routes=[Route("/predictions/{m}", predictions, methods=["POST"]), Route("/models/{m}", describe)])
    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, port


def timed(client, url: str, body: bytes, n: int) -> list[float]:
    headers = {"Content-Type": "image/png"}
    for _ in range(5):  # warm-up
        client.post(url, content=body, headers=headers)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        reply = client.post(url, content=body, headers=headers)
        out.append(time.perf_counter() - start)
        assert reply.status_code == 200, reply.text
    return out


FLOOD_CLIENT = """
import sys
from concurrent.futures import ThreadPoolExecutor
import httpx
url, n = sys.argv[1], int(sys.argv[2])
body = bytes(95 * 1024**2)
def one(_):
    try:
        return str(httpx.post(url, content=body, headers={"Content-Type": "image/png"}, timeout=120).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__
with ThreadPoolExecutor(n) as pool:
    answers = list(pool.map(one, range(n)))
print({a: answers.count(a) for a in set(answers)})
"""


def flood(url: str, n: int) -> None:
    """``n`` concurrent keyless 95 MiB POSTs from a child process; prints the front's RSS before / peak."""
    import subprocess

    import psutil

    me = psutil.Process()
    before = peak = me.memory_info().rss
    client = subprocess.Popen([sys.executable, "-c", FLOOD_CLIENT, url, str(n)], stdout=subprocess.PIPE, text=True)
    while client.poll() is None:
        peak = max(peak, me.memory_info().rss)
        time.sleep(0.05)
    answers = client.stdout.read().strip() if client.stdout else "?"
    print(
        f"flood: {n} keyless 95 MiB POSTs from another process -> {answers}; front (this process) RSS "
        f"{before / 1e6:.0f} MB before, peak +{(peak - before) / 1e6:.0f} MB"
    )


def main() -> int:
    import httpx

    from sslzoo.serving.auth import KeyStore, new_key_file
    from sslzoo.serving.front import FrontServer, FrontSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--flood", type=int, default=0, metavar="N", help="N keyless 95 MiB POSTs at once")
    args = parser.parse_args()
    bodies = {f"{side}x{side}": _png(side) for side in (256, 1000)}
    # the engine answers with a body of the label-map PNG's size (about a quarter of the input's)
    answers = {len(b): bytes(max(1, len(b) // 4)) for b in bodies.values()}
    engine, engine_port = start_engine(answers)
    keys = new_key_file(Path(tempfile.mkdtemp()) / "keys.txt")
    key = keys.read_text().splitlines()[1]
    base = f"http://127.0.0.1:{engine_port}"
    settings = FrontSettings(
        engine_url=base, management_url=base, metrics_url=base, models={"m": "segmenter"}, keys=KeyStore(keys)
    )
    front_port = _port()
    rows = []
    with FrontServer(settings, "127.0.0.1", front_port), httpx.Client(timeout=60) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        for label, body in bodies.items():
            direct = timed(client, f"{base}/predictions/m", body, args.requests)
            fronted = timed(client, f"http://127.0.0.1:{front_port}/predictions/m", body, args.requests)
            rows.append((label, len(body), direct, fronted))
        if args.flood:
            flood(f"http://127.0.0.1:{front_port}/predictions/m", args.flood)
    engine.should_exit = True
    header = ("direct p50 ms", "front p50 ms", "added p50 ms", "front p95 ms")
    print(f"{'body':10} {'bytes':>9} " + " ".join(f"{h:>14}" for h in header))
    for label, size, direct, fronted in rows:
        d, f = 1000 * statistics.median(direct), 1000 * statistics.median(fronted)
        p95 = 1000 * float(np.percentile(fronted, 95))
        print(f"{label:10} {size:>9,} {d:>14.2f} {f:>14.2f} {f - d:>14.2f} {p95:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
