"""The thread policy: one torch thread for small products or a busy machine, more only for large products on
idle cores, `threads` always wins, and the caller's thread count comes back after the run; the idle cores are
the ones other processes leave idle, this process's own CPU time not counted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import cadence
from cadence.config import DataConfig
from cadence.engine import Callback, options


@pytest.fixture(scope="module")
def wide():
    """Inputs wide enough that a chunk's forward pass passes PARALLEL_FLOPS: 400 x 2048 features."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2048, generator=gen)
    return cadence.from_arrays(x.numpy(), (torch.arange(400) % 3).numpy(), config=DataConfig(standardize="none"))


class Threads(Callback):
    def on_run_start(self, state):
        self.seen = torch.get_num_threads()


def _threads(data, **settings) -> int:
    seen = Threads()
    run = cadence.train("mlp:512", data, callbacks=[seen], max_updates=2, **settings)
    assert run.threads == seen.seen == run.summary()["threads"]
    return run.threads


@pytest.fixture
def two_cores(monkeypatch):
    """A process allowed two torch threads, with the idle cores under the test's control."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield lambda n: monkeypatch.setattr(options, "idle_cores", lambda: n)
    torch.set_num_threads(before)


def test_small_products_run_on_one_thread_and_the_count_comes_back(digits, two_cores):
    two_cores(2)
    assert _threads(digits, strategy="mini-batch") == 1  # digits' default run: 64 x 64 -> 512 products
    assert torch.get_num_threads() == 2


def test_large_products_use_the_idle_cores_and_a_busy_machine_gets_one_thread(wide, two_cores):
    two_cores(2)
    assert _threads(wide, strategy="full-batch") == 2
    two_cores(0)  # every core busy with other work
    assert _threads(wide, strategy="full-batch") == 1


def test_small_runs_never_pay_for_the_look_at_the_machine(digits, monkeypatch):
    def watched() -> int:
        raise AssertionError("idle_cores ran for a run whose products are too small to split")

    monkeypatch.setattr(options, "idle_cores", watched)
    assert _threads(digits, strategy="mini-batch") == 1


def test_one_sample_updates_on_the_kernel_use_one_thread(digits, two_cores):
    two_cores(2)
    assert _threads(digits, strategy="online") == 1


def test_threads_wins_over_the_policy(digits, two_cores):
    two_cores(0)
    assert _threads(digits, strategy="mini-batch", threads=2) == 2


def test_the_forward_flops_count_convolutions_per_output_position():
    model = cadence.models.build_model(
        cadence.RunConfig().model.model_copy(update={"spec": "cnn"}), (1, 28, 28), 10
    )
    params = sum(p.numel() for p in model.parameters())
    assert options.forward_flops(model, torch.zeros(1, 1, 28, 28)) > 10 * 2 * params
    mlp = cadence.models.build_model(cadence.RunConfig().model, (64,), 10)  # 64-128-64-10: each weight once
    assert options.forward_flops(mlp, torch.zeros(1, 64)) == 2 * sum(p.numel() for p in mlp.parameters())


def _scripted(monkeypatch, looks: list[options.CpuSample]) -> int:
    """idle_cores over scripted looks at /proc/stat (no waiting between them)."""
    looks = iter(looks)
    monkeypatch.setattr(options, "_cpu_sample", lambda cpus: next(looks))
    monkeypatch.setattr(options, "WINDOW_SECONDS", 0.0)
    return options.idle_cores()


def test_this_process_s_own_cpu_time_is_not_counted_as_busy_cores(monkeypatch):
    n, hz = len(os.sched_getaffinity(0)), os.sysconf("SC_CLK_TCK")
    window = 0.1
    every_core_busy = round(n * window * hz)  # busy ticks of the usable CPUs over the window

    def looks(own_cores: float, others_running: tuple[int, int, int] = (0, 0, 0)) -> list[options.CpuSample]:
        start = options.CpuSample(0.0, 1000, 5.0, others_running[0])
        middle = options.CpuSample(window / 2, 1000, 5.0, others_running[1])
        end = options.CpuSample(window, 1000 + every_core_busy, 5.0 + own_cores * window, others_running[2])
        return [start, middle, end]

    assert _scripted(monkeypatch, looks(own_cores=n)) == n  # all of it this process's own (spinning workers)
    assert _scripted(monkeypatch, looks(own_cores=n - 1)) == n - 1  # one core's worth from other processes
    assert _scripted(monkeypatch, looks(own_cores=0)) == 0
    if n == os.cpu_count():  # procs_running counts every CPU, so it is looked at only where all are usable
        assert _scripted(monkeypatch, looks(own_cores=n, others_running=(1, 1, 1))) == n - 1
        assert _scripted(monkeypatch, looks(own_cores=n, others_running=(2, 0, 0))) == n  # a task for a moment


def test_without_proc_the_load_average_beyond_this_process_counts(monkeypatch):
    n = len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0 + n, 0.0, 0.0))
    assert _scripted(monkeypatch, [None]) == 0
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 0.0, 0.0))
    assert _scripted(monkeypatch, [None]) == n


def test_a_process_spinning_on_a_core_leaves_it_out_of_the_idle_cores():
    # Only "at most": other developers' work on a shared machine can only take more cores.
    usable = len(os.sched_getaffinity(0))
    spinner = subprocess.Popen(
        [sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"], stdout=subprocess.PIPE
    )
    try:
        assert spinner.stdout.readline() == b"spinning\n"
        assert options.idle_cores() <= usable - 1
    finally:
        spinner.kill()
        spinner.wait()
