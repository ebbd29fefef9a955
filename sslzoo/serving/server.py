"""Run TorchServe behind the REST front (:mod:`sslzoo.serving.front`) in the foreground.

:func:`serve` builds the store (:mod:`sslzoo.serving.modelstore`) in a work directory, in a child
process (the models it loads to validate them never stay in this process), writes
``config.properties`` from ``docker/config.properties`` with every TorchServe API on 127.0.0.1 and
TorchServe's own token authorisation off, starts the front on ``--host``:``--inference-port`` (it
checks the deployer's API keys, see :mod:`sslzoo.serving.auth`), starts ``torchserve
--foreground`` in its own process group with the work directory as working directory (logs and
TorchServe's pid file live there, never in the caller's CWD), waits until every model has a ready
worker, and on SIGINT/SIGTERM stops the front and the whole process group (launcher, Java
frontend, Python workers): SIGTERM, then SIGKILL after a grace period. SIGHUP re-reads the key file.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from sslzoo.errors import ConfigError

#: Key file written in the work directory when neither --api-keys nor $SSLZOO_API_KEYS_FILE is given.
GENERATED_KEYS = "api-keys.txt"
#: TorchServe's console log in the work directory (unless --verbose or --log-file).
ENGINE_LOG = "logs/torchserve.log"

#: The settings of docker/config.properties, used when that file is not installed (e.g. a wheel install).
DEFAULT_PROPERTIES: dict[str, str] = {
    "inference_address": "http://127.0.0.1:8083",
    "management_address": "http://127.0.0.1:8081",
    "metrics_address": "http://127.0.0.1:8082",
    "grpc_inference_address": "127.0.0.1",
    "grpc_management_address": "127.0.0.1",
    "grpc_inference_port": "7070",
    "grpc_management_port": "7071",
    "model_store": "/tmp/sslzoo-model-store",
    "allowed_urls": "file:///tmp/sslzoo-model-store/.*",
    "enable_model_api": "false",
    "disable_token_authorization": "true",
    "max_request_size": "104857600",
    "max_response_size": "104857600",
    "decode_input_request": "false",
    "default_workers_per_model": "1",
    "default_response_timeout": "300",
    "default_startup_timeout": "300",
    "job_queue_size": "8",
    "metrics_mode": "prometheus",
    "model_metrics_auto_detect": "true",
    "enable_metrics_api": "true",
}


class ServeConfig(BaseModel):
    """Options of ``sslzoo serve``."""

    host: str = Field("127.0.0.1", description="address of the REST front (0.0.0.0 in containers)")
    inference_port: int = Field(8080, ge=1, le=65535, description="the REST front's port (public)")
    management_port: int = Field(8081, ge=1, le=65535, description="TorchServe management API (127.0.0.1)")
    metrics_port: int = Field(8082, ge=1, le=65535, description="TorchServe metrics API (127.0.0.1)")
    engine_port: int = Field(8083, ge=1, le=65535, description="TorchServe inference API (127.0.0.1)")
    grpc_inference_port: int = Field(7070, ge=1, le=65535)
    grpc_management_port: int = Field(7071, ge=1, le=65535)
    api_keys: Path | None = Field(None, description="API key file (one key per line)")
    workers: int = Field(1, ge=1)
    max_pixels: int | None = Field(None, ge=1)
    max_body_bytes: int | None = Field(None, ge=1)
    startup_timeout: float = Field(300.0, gt=0)
    verbose: bool = False


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` lines of a Java properties file (comments and blank lines skipped)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        props[key.strip()] = value.strip()
    return props


def template_properties() -> dict[str, str]:
    """``docker/config.properties`` of the source tree (or ``$SSLZOO_TS_CONFIG``), else :data:`DEFAULT_PROPERTIES`."""
    import sslzoo

    candidates = []
    if os.environ.get("SSLZOO_TS_CONFIG"):
        candidates.append(Path(os.environ["SSLZOO_TS_CONFIG"]))
    candidates.append(Path(sslzoo.__file__).resolve().parents[1] / "docker" / "config.properties")
    for path in candidates:
        if path.is_file():
            return parse_properties(path.read_text())
    return dict(DEFAULT_PROPERTIES)


def render_properties(config: ServeConfig, store: Path, models: list[str]) -> str:
    """The config.properties TorchServe runs with: the template with addresses, store and models filled in."""
    props = template_properties()
    store = store.resolve()
    props.update(
        inference_address=f"http://127.0.0.1:{config.engine_port}",
        management_address=f"http://127.0.0.1:{config.management_port}",
        metrics_address=f"http://127.0.0.1:{config.metrics_port}",
        grpc_inference_address="127.0.0.1",
        grpc_management_address="127.0.0.1",
        grpc_inference_port=str(config.grpc_inference_port),
        grpc_management_port=str(config.grpc_management_port),
        model_store=str(store),
        allowed_urls=f"file://{store}/.*",
        load_models=",".join(models),
        default_workers_per_model=str(config.workers),
        # the front authenticates; TorchServe is reachable on 127.0.0.1 only (see sslzoo.serving.front)
        disable_token_authorization="true",
    )
    if config.max_body_bytes:
        props["max_request_size"] = str(config.max_body_bytes + 1024**2)  # a margin: the front enforces the limit
    return "\n".join(f"{key}={value}" for key, value in props.items()) + "\n"


def torch_threads(workers: int, cores: int | None = None) -> str:
    """Intra-op torch threads per worker: ``$SSLZOO_TORCH_THREADS`` when set, else the cores shared by the workers.

    Unbounded, every worker's torch takes all cores; workers running at once then oversubscribe them and
    torch's threads wait on each other (docs/inference.md, "Serving").
    """
    given = os.environ.get("SSLZOO_TORCH_THREADS", "").strip()
    if given:
        return given
    return str(max(1, (cores or os.cpu_count() or 1) // max(1, workers)))


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago (for tests, benchmarks, ad hoc servers)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def check_ports_free(config: ServeConfig) -> None:
    """Raise :class:`ConfigError` naming the option to change when a port is taken or given twice."""
    import socket

    ports = {
        "--inference-port": (config.host, config.inference_port),
        "--management-port": ("127.0.0.1", config.management_port),
        "--metrics-port": ("127.0.0.1", config.metrics_port),
        "--engine-port": ("127.0.0.1", config.engine_port),
        "--grpc-inference-port": ("127.0.0.1", config.grpc_inference_port),
        "--grpc-management-port": ("127.0.0.1", config.grpc_management_port),
    }
    numbers = [port for _, port in ports.values()]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"the six ports must differ, got {numbers}; set --inference-port, --management-port, ...")
    for option, (host, port) in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ConfigError(
                    f"port {port} on {host} is not available ({exc.strerror}); choose another with {option}"
                ) from exc


def torchserve_executable() -> str:
    """``torchserve`` beside the running Python (same venv), else on PATH."""
    beside = Path(sys.executable).parent / "torchserve"
    if beside.is_file():
        return str(beside)
    found = shutil.which("torchserve")
    if found is None:
        raise ConfigError("the 'torchserve' command is not installed; pip install torchserve==0.12.0")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ConfigError("TorchServe needs Java 17: install openjdk-17-jre-headless or set JAVA_HOME")
    return found


def resolve_key_file(config: ServeConfig, workdir: Path) -> tuple[Path, bool]:
    """The API key file: ``--api-keys``, else ``$SSLZOO_API_KEYS_FILE``, else ``WORKDIR/api-keys.txt``.

    The last one is created with one random key when missing (and kept: the same key works after a
    restart with the same work directory). Returns ``(path, generated_now)``.
    """
    from sslzoo.serving.auth import KEYS_ENV, new_key_file

    if config.api_keys is not None:
        return Path(config.api_keys), False
    if os.environ.get(KEYS_ENV):
        return Path(os.environ[KEYS_ENV]), False
    path = workdir / GENERATED_KEYS
    if path.is_file():
        return path, False
    return new_key_file(path), True


def first_key(path: Path) -> str | None:
    """The first key of a key file (for the console's example call), or None when unreadable."""
    from sslzoo.serving.auth import parse_keys

    try:
        return parse_keys(path.read_text(encoding="utf-8"), str(path))[0]
    except (OSError, UnicodeDecodeError, ConfigError):
        return None


#: Environment variables holding paths (``os.pathsep``-separated lists too) that handlers read. TorchServe runs its
#: workers in the server's work folder, so a relative value would point elsewhere there.
PATH_ENV_VARS = ("SSLZOO_ZOO_DIR", "SSLZOO_DEFAULTS_DIR", "SSLZOO_SHARED_DATA", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME")


def absolute_path_env(env: Mapping[str, str], cwd: Path | None = None) -> dict[str, str]:
    """``env`` with every relative path in :data:`PATH_ENV_VARS` made absolute against ``cwd`` (default: the
    current folder), so the workers resolve what the caller meant; other variables are unchanged."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    out = dict(env)
    for name in PATH_ENV_VARS:
        if out.get(name, "").strip():
            parts = out[name].split(os.pathsep)
            out[name] = os.pathsep.join(
                str(base / Path(p).expanduser()) if p.strip() and not Path(p).expanduser().is_absolute() else p
                for p in parts
            )
    return out


class TorchServeProcess:
    """``torchserve --foreground`` in its own process group; a context manager that always stops it."""

    def __init__(
        self,
        workdir: Path,
        config_file: Path,
        store: Path,
        models: list[str],
        log_file: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        tmp = workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        logs = workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = absolute_path_env(os.environ)
        # TorchServe keeps its pid file and worker sockets in the temp dir: one per server avoids clashes
        env.update(TMPDIR=str(tmp), TEMP=str(tmp), LOG_LOCATION=str(logs), METRICS_LOCATION=str(logs))
        env.update(extra_env or {})
        command = [
            torchserve_executable(),
            "--foreground",
            "--ncs",
            "--ts-config",
            str(config_file),
            "--model-store",
            str(store),
            "--disable-token-auth",
        ]
        self.command = command
        if log_file:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_file, "ab") if log_file else None  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            start_new_session=True,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 30.0) -> int:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL what is left."""
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.2)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self._log:
            self._log.close()
        return self.process.returncode if self.process.returncode is not None else -9

    def __enter__(self) -> TorchServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies count as gone: the group exists only while a member is not yet reaped
    import psutil

    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


def models_ready(management_url: str, models: list[str], timeout: float = 2.0) -> list[str]:
    """The models of ``models`` without a READY worker, asked from TorchServe's management API."""
    import httpx

    pending = []
    for name in models:
        try:
            reply = httpx.get(f"{management_url}/models/{name}", timeout=timeout)
            workers = reply.json()[0].get("workers", []) if reply.status_code == 200 else []
        except (httpx.HTTPError, OSError, ValueError, IndexError, AttributeError):
            workers = []
        if not any(w.get("status") == "READY" for w in workers):
            pending.append(name)
    return pending


def wait_until_ready(
    config: ServeConfig,
    workdir: Path,
    models: list[str],
    server: TorchServeProcess,
    timeout: float,
    should_stop=lambda: False,
    log_hint: str = "",
) -> bool:
    """Poll the management API until every model has a READY worker.

    Returns False when ``should_stop()`` became true first; raises :class:`ConfigError` on timeout or exit.
    """
    deadline = time.monotonic() + timeout
    management = f"http://127.0.0.1:{config.management_port}"
    pending = list(models)
    while time.monotonic() < deadline:
        if should_stop():
            return False
        if not server.alive():
            raise ConfigError(
                f"TorchServe exited with status {server.process.returncode} during start-up; "
                f"see {log_hint or 'its log'}"
            )
        pending = models_ready(management, pending)
        if not pending:
            return True
        time.sleep(0.5)
    raise ConfigError(
        f"TorchServe did not get ready within {timeout:.0f} s (waiting for: {', '.join(pending)}); see {log_hint}"
    )


@dataclass
class ServeInfo:
    """What the console tells an operator once the server is up."""

    url: str
    models: dict[str, str]
    key_file: Path
    key_generated: bool
    engine_log: str
    workdir: Path
    example_key: str | None


def _build_store_in_child(models: Mapping[str, str], store: Path, max_pixels: int | None) -> dict[str, str]:
    """Build the model store in a spawned child; the models it loads to validate them die with it.

    Returns ``{name: kind}``. An :class:`SslzooError` raised in the child is raised here with its message.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_build_store, dict(models), str(store), max_pixels).result()


def _build_store(models: dict[str, str], store: str, max_pixels: int | None) -> dict[str, str]:
    from sslzoo.errors import SslzooError
    from sslzoo.serving.modelstore import build_model_store

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # model loaders print progress; the console stays quiet
            specs = build_model_store(models, store, max_pixels=max_pixels)
    except SslzooError as exc:  # re-raised as a plain instance of its class: picklable
        raise type(exc)(str(exc)) from None
    return {name: spec.kind for name, spec in specs.items()}


def serve(
    models: Mapping[str, str],
    config: ServeConfig | None = None,
    workdir: str | Path | None = None,
    log_file: str | Path | None = None,
    on_ready=None,
    on_start=None,
) -> int:
    """Build the store, run the front and TorchServe until SIGINT/SIGTERM (or until TorchServe exits).

    ``on_start(info)`` is called once the front listens (before the models are ready),
    ``on_ready(info)`` once every model is ready (:class:`ServeInfo`). TorchServe's console goes to
    ``log_file`` (default ``WORKDIR/logs/torchserve.log``), or to this process's stdout with
    ``config.verbose``. Returns TorchServe's exit status (0 after a requested stop).
    """
    from sslzoo.serving.auth import KeyStore
    from sslzoo.serving.front import FrontServer, FrontSettings
    from sslzoo.serving.limits import Limits

    config = config or ServeConfig()
    check_ports_free(config)
    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="sslzoo-serve-")) if workdir is None else Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    stop_requested = False
    reload_keys = False

    def request_stop(signum, _frame):
        nonlocal stop_requested
        stop_requested = True

    def request_reload(signum, _frame):
        nonlocal reload_keys
        reload_keys = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, request_reload)
    try:
        key_file, generated = resolve_key_file(config, work)
        keys = KeyStore(key_file)
        extra_env = {"SSLZOO_TORCH_THREADS": torch_threads(config.workers)}
        if config.max_pixels:
            extra_env["SSLZOO_MAX_PIXELS"] = str(config.max_pixels)
        if config.max_body_bytes:
            extra_env["SSLZOO_MAX_BODY_BYTES"] = str(config.max_body_bytes)
        os.environ.update(extra_env)
        limits = Limits.from_env()  # raises ConfigError on a bad SSLZOO_* limit before anything starts
        config = config.model_copy(update={"max_body_bytes": limits.max_body_bytes})  # TorchServe's limit follows
        store = work / "model-store"
        if store.exists():
            shutil.rmtree(store)
        kinds = _build_store_in_child(models, store, config.max_pixels)
        names = list(kinds)
        config_file = work / "config.properties"
        config_file.write_text(render_properties(config, store, names))
        if stop_requested:
            return 0
        engine_log = Path(log_file) if log_file else (None if config.verbose else work / ENGINE_LOG)
        # a wildcard address is not something to paste into curl: show loopback (reachable on every interface)
        shown_host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
        info = ServeInfo(
            url=f"http://{shown_host}:{config.inference_port}",
            models=kinds,
            key_file=key_file,
            key_generated=generated,
            engine_log=str(engine_log) if engine_log else "this console (--verbose)",
            workdir=work,
            example_key=first_key(key_file),
        )
        settings = FrontSettings(
            engine_url=f"http://127.0.0.1:{config.engine_port}",
            management_url=f"http://127.0.0.1:{config.management_port}",
            metrics_url=f"http://127.0.0.1:{config.metrics_port}",
            models=kinds,
            keys=keys,
            max_body_bytes=limits.max_body_bytes,
        )
        with FrontServer(settings, config.host, config.inference_port):
            if on_start is not None:
                on_start(info)
            with TorchServeProcess(work, config_file, store, names, engine_log, extra_env) as server:
                if not wait_until_ready(
                    config, work, names, server, config.startup_timeout, lambda: stop_requested, info.engine_log
                ):
                    return 0
                if on_ready is not None:
                    on_ready(info)
                while server.alive() and not stop_requested:
                    if reload_keys:
                        reload_keys = False
                        keys.reload()
                    time.sleep(0.2)
                if not server.alive() and not stop_requested:
                    return int(server.process.returncode or 1)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)
