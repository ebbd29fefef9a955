"""Run TorchServe in the foreground on a freshly built model store.

:func:`serve` builds the store (:mod:`sslzoo.serving.modelstore`) in a work directory, writes
``config.properties`` from ``docker/config.properties`` with the chosen ports, starts
``torchserve --foreground`` in its own process group with that directory as working directory
(so ``key_file.json``, logs and TorchServe's pid file live there, never in the caller's CWD),
waits for ``/ping`` and every model to have a ready worker, and on SIGINT/SIGTERM stops the whole
process group (launcher, Java frontend, Python workers): SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from sslzoo.errors import ConfigError

KEY_FILE = "key_file.json"

#: The settings of docker/config.properties, used when that file is not installed (e.g. a wheel install).
DEFAULT_PROPERTIES: dict[str, str] = {
    "inference_address": "http://127.0.0.1:8080",
    "management_address": "http://127.0.0.1:8081",
    "metrics_address": "http://127.0.0.1:8082",
    "grpc_inference_address": "127.0.0.1",
    "grpc_management_address": "127.0.0.1",
    "grpc_inference_port": "7070",
    "grpc_management_port": "7071",
    "model_store": "/tmp/sslzoo-model-store",
    "allowed_urls": "file:///tmp/sslzoo-model-store/.*",
    "enable_model_api": "false",
    "disable_token_authorization": "false",
    "token_expiration_min": "60",
    "max_request_size": "104857600",
    "max_response_size": "104857600",
    "decode_input_request": "false",
    "default_workers_per_model": "1",
    "default_response_timeout": "300",
    "default_startup_timeout": "300",
    "job_queue_size": "100",
    "metrics_mode": "prometheus",
    "model_metrics_auto_detect": "true",
    "enable_metrics_api": "true",
}


class ServeConfig(BaseModel):
    """Options of ``sslzoo serve``."""

    host: str = Field("127.0.0.1", description="address of the inference and metrics APIs (0.0.0.0 in containers)")
    inference_port: int = Field(8080, ge=1, le=65535)
    management_port: int = Field(8081, ge=1, le=65535)
    metrics_port: int = Field(8082, ge=1, le=65535)
    grpc_inference_port: int = Field(7070, ge=1, le=65535)
    grpc_management_port: int = Field(7071, ge=1, le=65535)
    token_auth: bool = True
    workers: int = Field(1, ge=1)
    max_pixels: int | None = Field(None, ge=1)
    startup_timeout: float = Field(300.0, gt=0)


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
        inference_address=f"http://{config.host}:{config.inference_port}",
        management_address=f"http://127.0.0.1:{config.management_port}",
        metrics_address=f"http://{config.host}:{config.metrics_port}",
        grpc_inference_address="127.0.0.1",
        grpc_management_address="127.0.0.1",
        grpc_inference_port=str(config.grpc_inference_port),
        grpc_management_port=str(config.grpc_management_port),
        model_store=str(store),
        allowed_urls=f"file://{store}/.*",
        load_models=",".join(models),
        default_workers_per_model=str(config.workers),
        disable_token_authorization=str(not config.token_auth).lower(),
    )
    return "\n".join(f"{key}={value}" for key, value in props.items()) + "\n"


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
        "--metrics-port": (config.host, config.metrics_port),
        "--grpc-inference-port": ("127.0.0.1", config.grpc_inference_port),
        "--grpc-management-port": ("127.0.0.1", config.grpc_management_port),
    }
    numbers = [port for _, port in ports.values()]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"the five ports must differ, got {numbers}; set --inference-port, --management-port, ...")
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


def read_keys(workdir: str | Path) -> dict[str, str]:
    """``{"inference": key, "management": key, "API": key}`` from the work directory's key_file.json."""
    data = json.loads((Path(workdir) / KEY_FILE).read_text())
    return {kind: entry["key"] for kind, entry in data.items() if isinstance(entry, dict) and "key" in entry}


class TorchServeProcess:
    """``torchserve --foreground`` in its own process group; a context manager that always stops it."""

    def __init__(
        self,
        workdir: Path,
        config_file: Path,
        store: Path,
        models: list[str],
        token_auth: bool,
        log_file: Path | None = None,
    ) -> None:
        self.workdir = workdir
        tmp = workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        logs = workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # TorchServe keeps its pid file and worker sockets in the temp dir: one per server avoids clashes
        env.update(TMPDIR=str(tmp), TEMP=str(tmp), LOG_LOCATION=str(logs), METRICS_LOCATION=str(logs))
        command = [
            torchserve_executable(),
            "--foreground",
            "--ncs",
            "--ts-config",
            str(config_file),
            "--model-store",
            str(store),
        ]
        if not token_auth:
            command.append("--disable-token-auth")
        self.command = command
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


def wait_until_ready(
    config: ServeConfig,
    workdir: Path,
    models: list[str],
    server: TorchServeProcess,
    timeout: float,
    should_stop=lambda: False,
) -> bool:
    """Poll ``/ping`` and the management API until every model has a READY worker.

    Returns False when ``should_stop()`` became true first; raises :class:`ConfigError` on timeout or exit.
    """
    import httpx

    deadline = time.monotonic() + timeout
    base = f"http://127.0.0.1:{config.inference_port}"
    management = f"http://127.0.0.1:{config.management_port}"
    pending = list(models)
    while time.monotonic() < deadline:
        if should_stop():
            return False
        if not server.alive():
            raise ConfigError(
                f"TorchServe exited with status {server.process.returncode} during start-up; "
                f"see the log above or {workdir / 'logs'} (is a port already in use?)"
            )
        try:
            keys = read_keys(workdir) if config.token_auth else {}
            # TorchServe 0.12 asks for the inference key even on /ping when token auth is on
            ping_headers = {"Authorization": f"Bearer {keys['inference']}"} if keys else {}
            if httpx.get(f"{base}/ping", headers=ping_headers, timeout=2).status_code == 200:
                headers = {"Authorization": f"Bearer {keys['management']}"} if keys else {}
                still = []
                for name in pending:
                    reply = httpx.get(f"{management}/models/{name}", headers=headers, timeout=2)
                    workers = reply.json()[0].get("workers", []) if reply.status_code == 200 else []
                    if not any(w.get("status") == "READY" for w in workers):
                        still.append(name)
                pending = still
                if not pending:
                    return True
        except (httpx.HTTPError, OSError, KeyError, ValueError, IndexError):
            pass
        time.sleep(0.5)
    raise ConfigError(
        f"TorchServe did not get ready within {timeout:.0f} s (waiting for: {', '.join(pending)}); "
        f"see {workdir / 'logs'}"
    )


def serve(
    models: Mapping[str, str],
    config: ServeConfig | None = None,
    workdir: str | Path | None = None,
    log_file: str | Path | None = None,
    on_ready=None,
) -> int:
    """Build the store, run TorchServe until SIGINT/SIGTERM (or until it exits), stop it cleanly.

    ``on_ready(workdir)`` is called once every model is ready. Returns TorchServe's exit status
    (0 after a requested stop).
    """
    from sslzoo.serving.modelstore import build_model_store

    config = config or ServeConfig()
    check_ports_free(config)
    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="sslzoo-serve-")) if own_workdir else Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    stop_requested = False

    def request_stop(signum, _frame):
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        (work / KEY_FILE).unlink(missing_ok=True)  # a stale key file from an earlier run would mislead clients
        store = work / "model-store"
        if store.exists():
            shutil.rmtree(store)
        specs = build_model_store(models, store, max_pixels=config.max_pixels)
        names = list(specs)
        config_file = work / "config.properties"
        config_file.write_text(render_properties(config, store, names))
        if stop_requested:
            return 0
        with TorchServeProcess(work, config_file, store, names, config.token_auth, log_file) as server:
            if not wait_until_ready(config, work, names, server, config.startup_timeout, lambda: stop_requested):
                return 0
            if on_ready is not None:
                on_ready(work)
            while server.alive() and not stop_requested:
                time.sleep(0.2)
            if not server.alive() and not stop_requested:
                return int(server.process.returncode or 1)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        (work / KEY_FILE).unlink(missing_ok=True)  # keys of a stopped server are useless; do not leave them
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)
