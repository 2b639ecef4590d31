"""Data-parallel training on the CPU: gloo backend, 2 processes, the tiny config."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.multiprocessing as mp  # noqa: E402
from baseline_support import config_file, make_prepared, read_log, tiny_options  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, prep: str, out: str, dump: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from c2seg_baseline.train import train

    summary = train(tiny_options(Path(prep), Path(out), steps=3, eval_every=3, batch_size=2))
    model = summary["model"]
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, Path(dump) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("ddp") / "AB")


def test_two_gloo_ranks_end_with_identical_weights(prepared, tmp_path):
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, free_port(), str(prepared), str(out), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:  # parameters (averaged gradients) and buffers (BN statistics broadcast)
        assert torch.equal(w0[k], w1[k]), k
    # The ranks did train: the weights moved away from the seeded initialisation.
    from c2seg_baseline.checkpoint import read_checkpoint
    from c2seg_baseline.config import HighDANConfig
    from c2seg_baseline.model import HighDAN

    state = read_checkpoint(out / "last.pt")
    torch.manual_seed(3)
    init = HighDAN(HighDANConfig.from_dict(state["config"])).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0 if k.endswith("weight"))
    # Only rank 0 wrote: one log line per step, checkpoint records the world size.
    assert [r["step"] for r in read_log(out) if "eval" not in r] == [1, 2, 3]
    assert state["run"]["world_size"] == 2 and state["step"] == 3
    for part in ("generator", "d0", "d1"):
        for k, v in state[part].items():
            assert torch.equal(v, w0[f"{part}.{k}"]), k


def test_torchrun_cli_trains_data_parallel(prepared, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--no-python", sys.executable, "-c", "from c2seg_kit.cli import main; main()",
           "train-baseline", "--data", str(prepared), "--track", "AB", "--out", str(out),
           "--config", config_file(prepared.parent), "--steps", "2", "--device", "cpu", "--batch-size", "2",
           "--eval-every", "2", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("step 2/2") == 2  # both ranks finish; only rank 0 writes files
    assert [x["step"] for x in read_log(out) if "eval" not in x] == [1, 2]
    assert (out / "best.pt").is_file()
