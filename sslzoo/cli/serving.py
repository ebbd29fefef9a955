"""``sslzoo serve`` (TorchServe in the foreground) and ``sslzoo predict`` (the same services in process)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SERVE_DESCRIPTION = """\
Serve segmenters, encoders and evaluation over REST (CONTRACTS.md section 2): an authenticating front
on --host:--inference-port, TorchServe behind it on 127.0.0.1.
  POST /predictions/<segmenter>  image -> PNG | JSON | GeoJSON (Accept header or form field 'format')
  POST /predictions/<encoder>    image -> {"model", "dim", "embedding"}
  POST /predictions/evaluate     labelled set (multipart) -> DSC / AJI / AJI+ / PQ
  POST /predictions/rank         labelled images + masks (multipart) -> encoders ranked (docs/rank.md)
  GET  /ping                     200 when every model has a live worker, else 503 (no key needed)
  GET  /metrics                  Prometheus text (no key needed)
Without --models the embedded defaults nuclei, lesion and embed (from the model zoo), evaluate and rank
are served. Clients send 'Authorization: Bearer <key>' with a key from the API key file (--api-keys FILE or
$SSLZOO_API_KEYS_FILE: one key per line, several keys for rotation; re-read when it changes and on
SIGHUP; keys never expire). Without one, WORKDIR/api-keys.txt is created with a random key and reused.
Work limits (413 naming the limit) are environment variables: SSLZOO_MAX_BODY_BYTES, SSLZOO_MAX_PIXELS,
SSLZOO_MAX_ASPECT_RATIO, SSLZOO_MAX_TILE_PIXELS, SSLZOO_EVAL_MAX_PIXELS, SSLZOO_ARCHIVE_MAX_MEMBERS,
SSLZOO_ARCHIVE_MAX_BYTES (see sslzoo.serving.limits). Stop with Ctrl-C or SIGTERM; the Java frontend and
all workers stop with it. TorchServe's own log goes to WORKDIR/logs/torchserve.log (--verbose: console)."""

PREDICT_DESCRIPTION = """\
Run a segmenter or encoder on image files in this process (the same code as the server) and write one
output per image into --out: <stem>.png (8-bit mask or 16-bit label map), <stem>.json or <stem>.geojson
for segmenters; <stem>.json embeddings for encoders."""


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve models over REST with TorchServe (foreground)",
        description=SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--models",
        nargs="+",
        metavar="NAME=PATH",
        help="models to serve: NAME=FOLDER (segmenter or encoder folder), NAME=ZOO_NAME, 'evaluate' or 'rank' "
        "(default: nuclei lesion embed evaluate rank from the model zoo)",
    )
    serve.add_argument(
        "--host",
        default=os.environ.get("SSLZOO_SERVE_HOST", "127.0.0.1"),
        help="address of the REST front (default: $SSLZOO_SERVE_HOST or 127.0.0.1; 0.0.0.0 in containers); "
        "TorchServe's own APIs stay on 127.0.0.1",
    )
    serve.add_argument(
        "--inference-port",
        type=int,
        default=int(os.environ.get("SSLZOO_SERVE_PORT") or 8080),
        help="REST front port (default: $SSLZOO_SERVE_PORT or 8080)",
    )
    serve.add_argument(
        "--api-keys",
        default=os.environ.get("SSLZOO_API_KEYS_FILE"),
        metavar="FILE",
        help="API key file, one key per line (default: $SSLZOO_API_KEYS_FILE, else WORKDIR/api-keys.txt, "
        "created with a random key when missing)",
    )
    serve.add_argument(
        "--max-body-mb", type=float, default=None, help="request body limit in MiB, answered with 413 (default 100)"
    )
    serve.add_argument("--verbose", action="store_true", help="show TorchServe's log on the console")
    serve.add_argument("--engine-port", type=int, default=8083, help="TorchServe inference port on 127.0.0.1 (8083)")
    serve.add_argument("--management-port", type=int, default=8081, help="management API port on 127.0.0.1 (8081)")
    serve.add_argument("--metrics-port", type=int, default=8082, help="TorchServe metrics port on 127.0.0.1 (8082)")
    serve.add_argument("--grpc-inference-port", type=int, default=7070, help="gRPC inference port (default 7070)")
    serve.add_argument("--grpc-management-port", type=int, default=7071, help="gRPC management port (default 7071)")
    serve.add_argument("--workers", type=int, default=1, help="workers per model (default 1)")
    serve.add_argument(
        "--max-pixels", type=int, default=None, help="pixel limit per image, answered with 413 (default 50 million)"
    )
    serve.add_argument(
        "--workdir",
        default=os.environ.get("SSLZOO_SERVE_WORKDIR"),
        help="folder for the model store, config.properties, api-keys.txt and logs "
        "(default: $SSLZOO_SERVE_WORKDIR or a temporary folder removed at exit)",
    )
    serve.add_argument("--log-file", default=None, help="TorchServe's log file (default WORKDIR/logs/torchserve.log)")
    serve.set_defaults(handler=run_serve)

    predict = subparsers.add_parser(
        "predict",
        help="segment or embed image files in process",
        description=PREDICT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("--model", required=True, help="segmenter/encoder folder, zoo name or alias (nuclei, ...)")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or TIFF files")
    predict.add_argument("--out", required=True, help="output folder (created if missing)")
    predict.add_argument(
        "--format", choices=("png", "json", "geojson"), default="png", help="segmentation output (default png)"
    )
    predict.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    predict.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnxruntime"),
        default=None,
        help="where a segmenter's forward pass runs (default: $SSLZOO_RUNTIME, else auto = ONNX Runtime on a CPU, "
        "torch on a GPU; outputs agree within 1e-5)",
    )
    predict.set_defaults(handler=run_predict)


def ready_message(info) -> str:
    """What the console prints once every model is ready (:class:`~sslzoo.serving.server.ServeInfo`)."""
    segmenter = next((name for name, kind in info.models.items() if kind == "segmenter"), None)
    key = "$(grep -v '^#' " + str(info.key_file) + " | head -1)"
    lines = [
        f"sslzoo: READY - serving {', '.join(info.models)} on {info.url}",
        f"  API keys : {info.key_file}" + (" (created now with one random key)" if info.key_generated else ""),
        f"  engine log: {info.engine_log}",
        f"  health   : curl {info.url}/ping",
    ]
    if segmenter:
        lines.append(
            f"  try      : curl -H \"Authorization: Bearer {key}\" -H 'Content-Type: image/png' "
            f"--data-binary @tile.png {info.url}/predictions/{segmenter} -o labels.png"
        )
    lines.append("  Ctrl-C or SIGTERM stops; SIGHUP re-reads the key file")
    return "\n".join(lines)


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sslzoo.errors import ConfigError, SslzooError
    from sslzoo.serving.modelstore import default_models, parse_model_args
    from sslzoo.serving.server import ServeConfig, serve

    models = parse_model_args(args.models) if args.models else default_models()
    try:
        config = ServeConfig(
            host=args.host,
            inference_port=args.inference_port,
            management_port=args.management_port,
            metrics_port=args.metrics_port,
            engine_port=args.engine_port,
            grpc_inference_port=args.grpc_inference_port,
            grpc_management_port=args.grpc_management_port,
            api_keys=args.api_keys,
            workers=args.workers,
            max_pixels=args.max_pixels,
            max_body_bytes=int(args.max_body_mb * 1024**2) if args.max_body_mb else None,
            verbose=args.verbose,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad serve option ({problems})") from exc

    def starting(info) -> None:
        print(f"sslzoo: starting {', '.join(info.models)} on {info.url} (GET /ping is 503 until ready) ...", flush=True)

    def ready(info) -> None:
        print(ready_message(info), flush=True)

    options = dict(workdir=args.workdir, log_file=args.log_file, on_ready=ready, on_start=starting)
    if args.models:
        return serve(models, config, **options)
    try:
        return serve(models, config, **options)
    except SslzooError as exc:
        raise type(exc)(
            f"{exc}. (Without --models sslzoo serves the embedded defaults nuclei, lesion, embed; to serve your own "
            "folders: sslzoo serve --models nuclei=SEGMENTER_DIR lesion=SEGMENTER_DIR embed=ENCODER_DIR evaluate)"
        ) from exc


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sslzoo.errors import ConfigError, DataError
    from sslzoo.serving.services import EmbeddingService, SegmentationService, model_kind

    out = Path(args.out)
    images = [Path(p) for p in args.images]
    for path in images:
        if not path.is_file():
            raise DataError(f"{path}: no such image file")
    kind = model_kind(args.model)
    name = Path(args.model).name if Path(args.model).is_dir() else args.model
    if kind == "segmenter":
        service = SegmentationService.load(name, args.model, args.device, runtime=args.runtime)
        suffix = {"png": ".png", "json": ".json", "geojson": ".geojson"}[args.format]
    elif kind == "encoder":
        service = EmbeddingService.load(name, args.model, args.device)
        suffix = ".json"
    else:
        raise ConfigError("'evaluate' is a server endpoint; evaluate files with 'sslzoo evaluate' instead")
    targets = [out / f"{path.stem}{suffix}" for path in images]
    inputs = {path.resolve() for path in images}
    if len({t.resolve() for t in targets}) != len(targets) or any(t.resolve() in inputs for t in targets):
        raise ConfigError("two inputs share a file name, or an output would overwrite an input; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    for path, target in tqdm(list(zip(images, targets, strict=True)), desc="predict", unit="image"):
        data = path.read_bytes()
        encoded = service.segment_bytes(data, args.format) if kind == "segmenter" else service.embed_bytes(data)
        target.write_bytes(encoded.body)
    print(f"wrote {len(targets)} file(s) to {out}")
    return 0
