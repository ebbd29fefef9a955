"""Torch threads per TorchServe worker: the cores shared by the workers, unless SSLZOO_TORCH_THREADS says."""

from __future__ import annotations

from sslzoo.serving.server import torch_threads


def test_workers_share_the_cores(monkeypatch):
    monkeypatch.delenv("SSLZOO_TORCH_THREADS", raising=False)
    assert torch_threads(1, cores=16) == "16"
    assert torch_threads(4, cores=16) == "4"
    assert torch_threads(3, cores=2) == "1"  # never 0


def test_an_explicit_setting_wins(monkeypatch):
    monkeypatch.setenv("SSLZOO_TORCH_THREADS", "2")
    assert torch_threads(8, cores=16) == "2"
