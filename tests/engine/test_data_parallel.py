"""Data-parallel training (engine/distributed.py): 2 CPU processes under torchrun end where 1 process ends,
only rank 0 writes, and the settings that cannot be split across processes are refused before anything runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from cadence.config import build_config
from cadence.engine import distributed
from cadence.engine.strategies import Update
from cadence.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import PARITY, parity_run, run_job  # noqa: E402

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(*args: str, nproc: int = 2, timeout: float = 300, env: dict | None = None):
    """`torchrun --standalone --nproc-per-node N ARGS`, one thread per process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return run_job(command, {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Every PARITY case trained by 2 processes (one torchrun job): ({rank: {case: result}}, their folder)."""
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun(str(WORKER), "parity", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {rank: torch.load(out / f"rank{rank}.pt") for rank in (0, 1)}, out


@pytest.mark.parametrize("case", list(PARITY))
def test_two_processes_end_with_the_weights_of_one(two_processes, case, tmp_path, one_thread):
    one = parity_run(case, tmp_path)
    assert one["processes"] == 1
    for rank in (0, 1):
        two = two_processes[0][rank][case]
        assert two["processes"] == 2
        # Not bitwise: each update's gradient is summed in another order. float32 weights near 0 move by its
        # rounding of the others (measured: 5.6e-8 at most, mini-batch); float64 cases agree to 1e-13.
        atol = 1e-7 if PARITY[case]["dtype"] == "float32" else 1e-8
        for name, weight in one["weights"].items():
            torch.testing.assert_close(two["weights"][name], weight, rtol=1e-5, atol=atol, msg=f"{case} {name}")
        assert two["history_updates"] == one["history_updates"]
        assert two["val_accuracy"] == one["val_accuracy"]  # evaluated on all of the split, each sample once
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)


def test_only_rank_0_writes_checkpoints_logs_and_the_run(two_processes):
    results, out = two_processes
    for case in PARITY:
        assert len(results[0][case]["written"]) >= 3, case  # every 5 updates, and at the end
        assert results[1][case]["written"] == [], case
        assert (out / f"{case}-metrics-rank0.csv").is_file() and (
            out / f"{case}-run-rank0" / "summary.json"
        ).is_file()
        assert not (out / f"{case}-metrics-rank1.csv").exists() and not (out / f"{case}-run-rank1").exists()


def test_resume_restores_every_process_rng(two_processes):
    for rank in (0, 1):
        result = two_processes[0][rank]["resume"]
        for name, weight in result["whole"].items():
            assert torch.equal(result["resumed"][name], weight), (rank, name)  # same processes, same sums: bitwise


def test_online_across_processes_is_refused_with_the_alternatives():
    config = build_config({"strategy": {"name": "online"}})
    with pytest.raises(ConfigError, match=r"online.*refused.*mini-batch.*1 process"):
        distributed.check(config, 2)
    distributed.check(config, 1)  # one process trains online as always


def test_a_batch_smaller_than_the_processes_is_refused():
    config = build_config({"strategy": {"name": "mini-batch", "batch_size": 3}})
    with pytest.raises(ConfigError, match=r"batch_size=3 is smaller than the 4 processes.*at least 4"):
        distributed.check(config, 4)
    distributed.check(config, 3)


def test_slices_of_an_uneven_update_cover_it_once_and_keep_its_sample_count():
    update = Update(
        chunks=(torch.arange(0, 7), torch.arange(7, 10)), n_samples=10, epoch=0, position=10, epoch_end=False
    )
    groups = [distributed.Group(r, 3, torch.device("cpu"), "gloo", 60.0) for r in range(3)]
    shards = [g.shard(update) for g in groups]
    for c in range(2):
        joined = torch.cat([s.chunks[c] for s in shards])
        assert torch.equal(joined, update.chunks[c])  # disjoint, in order, nothing left out
    assert [len(s.chunks[0]) for s in shards] == [3, 2, 2]  # the first 7 mod 3 processes take one more
    assert all(s.n_samples == 10 for s in shards)  # each slice's loss is divided by the whole update's count
    assert [s.offsets for s in shards] == [(0, 7), (3, 8), (5, 9)]  # where each slice sits in the update


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine: the cuda DDP path runs where one is"
)
def test_two_processes_on_cuda_train_data_parallel(tmp_path):
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"  # nccl needs one GPU per process
    script = (
        "import cadence, os; run = cadence.train('mlp:32', 'digits', device='cuda', batch_size=100, "
        f"max_updates=5, dist_backend={backend!r}); print('DEVICE', os.environ['RANK'], run.device, run.processes)"
    )
    path = tmp_path / "cuda_worker.py"
    path.write_text(script)
    proc = torchrun(str(path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "DEVICE 0 cuda:0 2" in proc.stdout
