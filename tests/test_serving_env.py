"""``sslzoo serve`` hands its workers absolute paths: TorchServe runs them in the server's work folder."""

from __future__ import annotations

import os
from pathlib import Path

from sslzoo.serving.server import absolute_path_env


def test_relative_zoo_and_model_folders_become_absolute_against_the_callers_folder(tmp_path):
    env = {
        "SSLZOO_ZOO_DIR": os.pathsep.join(["runs/zoo-cpu", "/abs/zoo", ""]),
        "SSLZOO_DEFAULTS_DIR": "models",
        "HF_HOME": "/already/absolute",
        "PATH": "bin",  # not a path variable of ours: left alone
        "SSLZOO_SHARED_DATA": "",
    }
    out = absolute_path_env(env, cwd=tmp_path)
    assert out["SSLZOO_ZOO_DIR"].split(os.pathsep) == [str(tmp_path / "runs/zoo-cpu"), "/abs/zoo", ""]
    assert out["SSLZOO_DEFAULTS_DIR"] == str(tmp_path / "models")
    assert out["HF_HOME"] == "/already/absolute" and out["PATH"] == "bin" and out["SSLZOO_SHARED_DATA"] == ""
    assert env["SSLZOO_DEFAULTS_DIR"] == "models"  # the caller's mapping is not changed


def test_a_relative_zoo_folder_still_resolves_from_the_workers_folder(tmp_path, monkeypatch):
    from sslzoo.hub.zoo_folder import zoo_dirs

    (tmp_path / "runs" / "zoo").mkdir(parents=True)
    worker_folder = tmp_path / "work"
    worker_folder.mkdir()
    env = absolute_path_env({"SSLZOO_ZOO_DIR": "runs/zoo"}, cwd=tmp_path)
    monkeypatch.chdir(worker_folder)
    assert zoo_dirs(env["SSLZOO_ZOO_DIR"]) == [tmp_path / "runs" / "zoo"]
    assert Path(zoo_dirs(env["SSLZOO_ZOO_DIR"])[0]).is_dir()
