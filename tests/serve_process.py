"""Start a real ``sslzoo serve`` for the end-to-end tests, on fresh free ports, until it prints READY.

``free_ports`` hands out ports that were free a moment ago; with the tests running in parallel another server can
take one before TorchServe binds it. Only that clash ("Address already in use" in TorchServe's log) is retried, on
new ports; any other start-up failure fails the test at once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from sslzoo.serving.server import free_ports

PORT_OPTIONS = (
    "--inference-port", "--management-port", "--metrics-port", "--engine-port", "--grpc-inference-port",
    "--grpc-management-port",
)  # fmt: skip
ATTEMPTS = 3


def port_clash(workdir: Path) -> bool:
    """True when TorchServe's log under ``workdir`` says a port was taken."""
    log = workdir / "logs" / "torchserve.log"
    return log.is_file() and "Address already in use" in log.read_text(errors="replace")


def start_serve(
    command: Callable[[list[int]], list[str]], workdir: Path, out: Path, cwd: Path, env: Mapping[str, str]
) -> tuple[subprocess.Popen, list[int]]:
    """Run ``command(ports)`` (``sslzoo serve ... --workdir workdir``) until READY; ``(process, ports)``."""
    for attempt in range(1, ATTEMPTS + 1):
        ports = free_ports(len(PORT_OPTIONS))
        with out.open("wb") as handle:
            process = subprocess.Popen(command(ports), cwd=cwd, env=dict(env), stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while b"sslzoo: READY" not in out.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(30)
                if attempt < ATTEMPTS and port_clash(workdir):
                    (workdir / "logs" / "torchserve.log").unlink()
                    break  # another test took a port: try new ones
                log = out.read_text(errors="replace")[-3000:]
                pytest.fail(f"sslzoo serve did not get ready (exit {process.poll()}):\n{log}")
            time.sleep(0.5)
        else:
            return process, ports
    raise AssertionError("unreachable")  # the last attempt returns or fails


def port_arguments(ports: list[int]) -> list[str]:
    """``--inference-port P0 --management-port P1 ...`` for :data:`PORT_OPTIONS`."""
    return [arg for option, port in zip(PORT_OPTIONS, ports, strict=True) for arg in (option, str(port))]
