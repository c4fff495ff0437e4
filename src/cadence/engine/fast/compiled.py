"""The compiled kernels, loaded with ctypes: the online engine (one-sample updates of a built-in MLP in C,
kernels/mlp_online.c, thousands per call on one thread) and the binding of a model and its optimizer state
that it shares with the batch engine's kernel (kernels/mlp_batch.c, whose products run in torch's BLAS)."""

from __future__ import annotations

import ctypes
import importlib.machinery
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch
from torch import nn

from cadence.engine.fast.predicate import mlp_layers, optimizer_kind
from cadence.engine.step import Applied, step_schedule
from cadence.engine.strategies import Update, rows_of
from cadence.errors import DataError

KERNEL_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
KERNEL_ABI = 3  # CADENCE_KERNEL_ABI in kernels/mlp_common.h
STATUS_NONFINITE, STATUS_BAD_TARGET = 1, 2  # STATUS_* in kernels/mlp_common.h

_FP = ctypes.POINTER(ctypes.c_float)


class _Net(ctypes.Structure):
    """Mirrors `Net` in kernels/mlp_common.h."""

    _fields_ = [
        ("n_layers", ctypes.c_int64),
        ("dims", ctypes.POINTER(ctypes.c_int64)),
        *((name, ctypes.POINTER(_FP)) for name in ("w", "b", "s1w", "s1b", "s2w", "s2b")),
        ("act", ctypes.c_int64),
        ("loss", ctypes.c_int64),
        ("opt", ctypes.c_int64),
        *((name, ctypes.c_float) for name in ("lr", "momentum", "weight_decay", "beta1", "beta2", "eps")),
        ("step", ctypes.c_double),
        ("work", _FP),
        ("status", ctypes.c_int64),
        ("sgemm", ctypes.c_void_p),
        ("max_rows", ctypes.c_int64),
    ]


@cache
def kernel() -> ctypes.CDLL | None:
    """The compiled kernel (built by `pip install`), or None when it was not built on this machine."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_mlp_online{suffix}"
        if path.exists():
            try:
                lib = ctypes.CDLL(str(path))
                lib.cadence_mlp_online_abi.restype = ctypes.c_int64
                if lib.cadence_mlp_online_abi() != KERNEL_ABI:  # built from older source: reinstall
                    return None
            except (OSError, AttributeError):
                return None
            fn = lib.cadence_mlp_online
            fn.restype = ctypes.c_int64
            ptr, i64 = ctypes.c_void_p, ctypes.c_int64
            # (net, x, n_features, y_int, y_float, idx, n_updates, losses)
            fn.argtypes = [ctypes.POINTER(_Net), ptr, i64, ptr, ptr, ptr, i64, ptr]
            fn = lib.cadence_mlp_batch
            fn.restype = ctypes.c_int64
            # (net, x, n_features, y_int, y_float, idx, n_chunks, sizes, n_updates, losses)
            fn.argtypes = [ctypes.POINTER(_Net), ptr, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr]
            return lib
    return None


@cache
def torch_sgemm() -> int | None:
    """The address of the Fortran `sgemm_` in the BLAS torch links (MKL in the x86-64 wheels, exported by
    libtorch_cpu), or None where torch's libraries export none: the batch engine then stays in torch ops."""
    lib_dir = Path(torch.__file__).parent / "lib"
    names = {"linux": "libtorch_cpu.so", "darwin": "libtorch_cpu.dylib"}
    path = lib_dir / names.get(sys.platform, "")
    if not path.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(path))  # already loaded by `import torch`: the same handle
        sgemm = lib.sgemm_
    except (OSError, AttributeError):
        return None
    # One product through it as the kernel calls it (integers in 64-bit slots), against torch's: a library
    # with another calling convention is not used.
    a, b = torch.arange(6.0).reshape(2, 3), torch.arange(12.0).reshape(3, 4)
    c = torch.zeros(2, 4)
    ints = [ctypes.c_int64(v) for v in (4, 2, 3, 4, 3, 4)]  # n, m, k, ldb, lda, ldc of C^T = B^T A^T
    one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
    fp = lambda t: ctypes.cast(t.data_ptr(), _FP)  # noqa: E731
    n, m, k, ldb, lda, ldc = (ctypes.byref(i) for i in ints)
    sgemm(b"N", b"N", n, m, k, ctypes.byref(one), fp(b), ldb, fp(a), lda, ctypes.byref(zero), fp(c), ldc)
    return ctypes.cast(sgemm, ctypes.c_void_p).value if torch.equal(c, a @ b) else None


class Bound:
    """A built-in MLP, its optimizer and torch's own optimizer state (momentum_buffer, exp_avg, exp_avg_sq,
    step) bound for a kernel, which reads and writes them in place, so autograd, checkpoints and later runs
    see the same state. Binds again whenever a resume, a rollback or a callback replaced any of them."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, task: str):
        self.linears, self.act = mlp_layers(model)
        self.params = list(model.parameters())
        self.optimizer = optimizer
        self.kind = optimizer_kind(optimizer, self.params)
        self.task = task
        self._net: _Net | None = None
        self._bound: list[torch.Tensor] = []
        self._work_floats = 0

    def _state_tensors(self) -> list[torch.Tensor]:
        """Every tensor the kernel writes, as the model and optimizer hold them now."""
        slots = {"momentum": ["momentum_buffer"], "nesterov": ["momentum_buffer"]}.get(
            self.kind, ["exp_avg", "exp_avg_sq"] if self.kind in ("adam", "adamw") else []
        )
        states = [self.optimizer.state.get(p, {}) for p in self.params]  # .get: plain SGD keeps no state
        return [*self.params, *(s[k] for k in slots for s in states if k in s)]

    def _bind(self, work_floats: int) -> _Net:
        fp = _FP
        states = [self.optimizer.state[p] for p in self.params] if self.kind != "sgd" else []
        if self.kind in ("momentum", "nesterov"):
            for p, s in zip(self.params, states, strict=True):
                # torch starts the buffer at the first gradient; 0 * momentum + g is that gradient exactly.
                s.setdefault("momentum_buffer", torch.zeros_like(p))
            slots = ["momentum_buffer"]
        elif self.kind in ("adam", "adamw"):
            for p, s in zip(self.params, states, strict=True):
                if not s:
                    s.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            slots = ["exp_avg", "exp_avg_sq"]
        else:
            slots = []

        def ptrs(tensors):
            self._keep.extend(tensors)
            return (fp * len(tensors))(*(ctypes.cast(t.data_ptr(), fp) for t in tensors))

        self._keep: list = []
        dims = [self.linears[0].in_features] + [lin.out_features for lin in self.linears]
        self._dims = (ctypes.c_int64 * len(dims))(*dims)
        self._work = torch.zeros(work_floats)
        self._work_floats = work_floats
        w = [lin.weight.data for lin in self.linears]
        b = [lin.bias.data for lin in self.linears]
        state_w = [[states[2 * i][k] for i in range(len(w))] for k in slots]
        state_b = [[states[2 * i + 1][k] for i in range(len(b))] for k in slots]
        net = _Net(
            n_layers=len(self.linears),
            dims=self._dims,
            w=ptrs(w),
            b=ptrs(b),
            act=self.act,
            loss=0 if self.task == "classification" else 1,
            opt=KERNEL_OPTIMIZERS.index(self.kind),
            work=ctypes.cast(self._work.data_ptr(), fp),
        )
        for i, slot in enumerate(("s1", "s2")[: len(slots)]):
            setattr(net, f"{slot}w", ptrs(state_w[i]))
            setattr(net, f"{slot}b", ptrs(state_b[i]))
        self._bound = self._state_tensors()
        return net

    def net(self, work_floats: int) -> _Net:
        """The bound network with the optimizer's hyperparameters as they are now (a callback may have
        changed them between runs) and scratch of at least `work_floats` floats."""
        current = self._state_tensors()
        if (
            self._net is None
            or work_floats > self._work_floats
            or len(current) != len(self._bound)
            or any(a is not b or a.data_ptr() != b.data_ptr() for a, b in zip(current, self._bound, strict=False))
        ):
            self._net = self._bind(max(work_floats, self._work_floats))
        net, group = self._net, self.optimizer.param_groups[0]
        net.lr, net.weight_decay, net.momentum = group["lr"], group["weight_decay"], group.get("momentum", 0.0)
        (net.beta1, net.beta2), net.eps = group.get("betas", (0.9, 0.999)), group.get("eps", 1e-8)
        if self.kind in ("adam", "adamw"):
            net.step = float(self.optimizer.state[self.params[0]]["step"])
        return net

    def count_steps(self, done: int) -> None:
        """Adam's step counters after `done` applied updates (the kernel counts in Net.step)."""
        if self.kind in ("adam", "adamw"):
            for p in self.params:
                self.optimizer.state[p]["step"] += done

    def targets(self, y: torch.Tensor) -> tuple[int | None, int | None]:
        """(int labels, float targets) pointers for the kernel: one of them is None."""
        return (y.data_ptr(), None) if self.task == "classification" else (None, y.data_ptr())


class OnlineKernel(Bound):
    """One-sample updates in compiled code: forward, loss, backward, the finiteness check of the loss and of
    every gradient, then the optimizer rule row by row.

    Reads rows of x and y at apply time, so a resident buffer may be filled while the engine lives (never
    reallocated).
    """

    name = "c-kernel"
    fallback = None
    max_run = 4096  # updates per call (~0.1 s): bounds how late a max_seconds budget or a progress bar acts

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, x, y, task: str):
        super().__init__(model, optimizer, task)
        self.scheduler = scheduler
        self.x, self.y = x, y
        self.n_features = self.linears[0].in_features

    def apply(self, updates: Sequence[Update]) -> Applied:
        """Train the updates in order, stopping before the first whose loss or gradient is not finite."""
        dims = [self.n_features] + [lin.out_features for lin in self.linears]
        net = self.net(3 * sum(dims))
        idx = rows_of(updates)  # one row per update
        losses = torch.empty(len(updates))
        y_int, y_float = self.targets(self.y)
        done = kernel().cadence_mlp_online(
            ctypes.byref(net),
            self.x.data_ptr(),
            self.n_features,
            y_int,
            y_float,
            idx.data_ptr(),
            len(updates),
            losses.data_ptr(),
        )
        self.count_steps(done)
        step_schedule(self.scheduler, done)
        if net.status == STATUS_BAD_TARGET:
            row = int(idx[done])
            raise DataError(
                f"label {int(self.y[row])} at training row {row} is outside the model's "
                f"{self.linears[-1].out_features} classes; the {done} updates before it were applied. "
                "Fix: map the labels to 0..K-1, or build the model with more outputs."
            )
        return Applied(losses[:done], done)
