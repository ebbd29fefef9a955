"""Distributed pretext training, proven: 2 CPU processes (gloo, DDP) equal one process on the same global batch.

The methods that gather across devices (SimCLR: embeddings with gradients; MoCo, DenseCL, DetCo: queue keys) run
one optimiser step in two ``torch.distributed`` processes (Lightning ``strategy="ddp"`` on processes this test
launches itself, rendezvous on 127.0.0.1) and in one process on the concatenated batch. Batch norm runs on its
running statistics in both (eval mode during the step: ``SyncBatchNorm`` needs GPUs, and per-rank batch statistics
are an intended DDP difference unrelated to gathering). Each rank reads its own half of the global batch in order
(rank 0: samples 0-1, rank 1: samples 2-3), so gathered keys arrive in the single process's order. Checked: the
loss (SimCLR: the same full-batch loss on every rank; queue methods: the mean of the ranks' losses over their own
queries), every queue buffer after the step, and the exported encoder (identical on both ranks and equal to the
single-process one).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

METHODS = ("simclr", "moco", "densecl", "detco")
GLOBAL_BATCH, SIZE, WORLD = 4, 32, 2
#: small heads: the check is about gathering, not capacity (DetCo's published 9C heads would dominate the run time)
PARAMS = {
    "simclr": {"proj_hidden_dim": 64, "proj_out_dim": 16},
    "moco": {"head_hidden_dim": 64, "head_out_dim": 16},
    "densecl": {"head_hidden_dim": 64, "head_out_dim": 16},
    "detco": {"head_hidden_dim": 64, "head_out_dim": 16, "patch_dim": 8},
}

pytestmark = pytest.mark.slow


def _run(method: str, rank: int | None, out: Path) -> None:
    """One optimiser step of ``method``: DDP rank ``rank`` of 2 on its half of the batch, or (None) one process."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from sslzoo.pretext.base import PretextConfig
    from sslzoo.pretext.registry import get_method

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(123)
    views = torch.randn(2, GLOBAL_BATCH, 3, SIZE, SIZE, generator=generator)
    torch.manual_seed(0)  # the same initial weights and queues in every process
    config = PretextConfig(
        method=method,
        backbone="resnet18",
        input_size=SIZE,
        batch_size=GLOBAL_BATCH,
        lr=0.5,
        samples_per_epoch=8,
        params=PARAMS[method],
        max_steps=1,
    )
    module = get_method(method)(config)
    initial = {k: v.detach().clone() for k, v in module.encoder.state_dict().items()}
    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            for m in pl_module.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    if rank is None:
        part, strategy = slice(0, GLOBAL_BATCH), "auto"
    else:
        half = GLOBAL_BATCH // WORLD
        part, strategy = slice(rank * half, (rank + 1) * half), "ddp"
    data = TensorDataset(views[0, part], views[1, part])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1 if rank is None else WORLD,
        strategy=strategy,
        use_distributed_sampler=False,  # each rank reads its own half, in order
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(module, DataLoader(data, batch_size=len(data)))
    module.export_encoder(out / "encoder")
    queues = {k: v.tolist() for k, v in module.state_dict().items() if k.endswith(".keys")}
    moved = any(not torch.equal(v, initial[k]) for k, v in module.encoder.state_dict().items())
    (out / "result.json").write_text(json.dumps({"loss": losses, "queues": queues, "moved": moved}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(rank: int | None, port: int) -> dict[str, str]:
    import sslzoo

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(sslzoo.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1", PL_DISABLE_FORK="1")
    if rank is not None:
        env.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            WORLD_SIZE=str(WORLD),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            NODE_RANK="0",
        )
    return env


def _launch(tmp_path: Path) -> dict[str, dict[str, Path]]:
    """Per method: the single-process run and both ranks, as three worker processes; wait for them."""
    folders = {m: {name: tmp_path / m / name for name in ("single", "rank0", "rank1")} for m in METHODS}
    jobs = []
    for method in METHODS:  # one method at a time: its two ranks rendezvous on a fresh port, its single run alongside
        method_port = _free_port()
        for name, rank in (("single", None), ("rank0", 0), ("rank1", 1)):
            folders[method][name].mkdir(parents=True)
            command = [sys.executable, __file__, method, "-" if rank is None else str(rank), str(folders[method][name])]
            jobs.append(
                subprocess.Popen(
                    command, env=_environment(rank, method_port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
            )
        for job in jobs[-3:]:
            output, _ = job.communicate(timeout=300)
            if job.returncode != 0:
                raise AssertionError(f"{method}: worker failed ({job.returncode}):\n{output.decode()[-4000:]}")
    return folders


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, Path]]:
    return _launch(tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("method", METHODS)
def test_two_process_ddp_step_equals_one_process_on_the_global_batch(runs, method):
    import torch
    from safetensors.torch import load_file

    results = {name: json.loads((folder / "result.json").read_text()) for name, folder in runs[method].items()}
    single, rank0, rank1 = results["single"], results["rank0"], results["rank1"]
    assert len(single["loss"]) == len(rank0["loss"]) == len(rank1["loss"]) == 1
    mean_of_ranks = (rank0["loss"][0] + rank1["loss"][0]) / 2
    assert mean_of_ranks == pytest.approx(single["loss"][0], rel=1e-4, abs=1e-5)
    if method == "simclr":  # negatives over the gathered global batch: the full loss on every rank
        assert rank0["loss"][0] == pytest.approx(single["loss"][0], rel=1e-4, abs=1e-5)
        assert rank1["loss"][0] == pytest.approx(single["loss"][0], rel=1e-4, abs=1e-5)
    else:  # the gathered keys of both ranks entered every queue, in the single process's order
        assert single["queues"] and set(single["queues"]) == set(rank0["queues"]) == set(rank1["queues"])
        for name, keys in single["queues"].items():
            torch.testing.assert_close(torch.tensor(rank0["queues"][name]), torch.tensor(keys), rtol=1e-4, atol=1e-5)
            assert rank0["queues"][name] == rank1["queues"][name]
    encoders = {name: load_file(str(folder / "encoder" / "model.safetensors")) for name, folder in runs[method].items()}
    assert set(encoders["rank0"]) == set(encoders["rank1"]) == set(encoders["single"])
    for key, value in encoders["rank0"].items():
        assert torch.equal(value, encoders["rank1"][key]), key  # identical on both ranks
        torch.testing.assert_close(value, encoders["single"][key], rtol=1e-4, atol=1e-5)
    assert single["moved"] and rank0["moved"]  # the step changed the encoder (lr 0.5), so equality means something


if __name__ == "__main__":  # worker: python tests/test_pretext_ddp.py METHOD RANK|- OUT
    _run(sys.argv[1], None if sys.argv[2] == "-" else int(sys.argv[2]), Path(sys.argv[3]))
