"""The fast path's two engines for the built-in MLP/logistic models: a compiled C kernel for one-sample
updates (OnlineKernel) and hand-derived gradients in torch ops for batches (BatchEngine).

Which runs may use them is fast.py's business; this module only recognises the model and optimizer it can
compute (`mlp_layers`, `optimizer_kind`) and computes them.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import math
import warnings
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cadence.data.datasets import Dataset
from cadence.engine.strategies import Update
from cadence.models.builders import MLP

ACTIVATIONS = {nn.ReLU: 0, nn.Tanh: 1, nn.Sigmoid: 2, nn.LeakyReLU: 3}
KERNEL_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
KERNEL_ABI = 1  # CADENCE_KERNEL_ABI in kernels/mlp_online.c


def mlp_layers(model: nn.Module) -> tuple[list[nn.Linear], int] | None:
    """The Linear layers and activation code of a plain built-in MLP (Flatten, Linear, act, ..., Linear)."""
    if type(model) is not MLP:
        return None
    mods = list(model)
    if not mods or type(mods[0]) is not nn.Flatten or mods[0].start_dim != 1:
        return None
    body = mods[1:]
    linears, acts = body[0::2], body[1::2]
    if not 0 < len(linears) < 64 or len(linears) != len(acts) + 1:  # the kernel keeps 64 layer pointers
        return None
    if any(type(m) is not nn.Linear or m.bias is None for m in linears):
        return None
    kinds = {type(a) for a in acts}
    if len(kinds) > 1 or any(k not in ACTIVATIONS for k in kinds):
        return None
    if any(isinstance(a, nn.LeakyReLU) and a.negative_slope != 0.01 for a in acts):
        return None
    hooked = any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in model.modules()
    )
    params = list(model.parameters())
    if hooked or any(p.dtype != torch.float32 or p.device.type != "cpu" or not p.requires_grad for p in params):
        return None
    if any(not p.is_contiguous() or p._backward_hooks for p in params):
        return None
    return linears, ACTIVATIONS[next(iter(kinds))] if kinds else 0


def optimizer_kind(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> str | None:
    """'sgd', 'momentum', 'nesterov', 'adam' or 'adamw' when `optimizer` is exactly that torch rule."""
    if len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if len(group["params"]) != len(params) or any(
        a is not b for a, b in zip(group["params"], params, strict=False)
    ):
        return None
    if group.get("maximize") or group.get("differentiable") or group.get("capturable"):
        return None
    if type(optimizer) is torch.optim.SGD:
        if group["dampening"] != 0:
            return None
        if group["momentum"] == 0:
            return None if group["nesterov"] else "sgd"
        return "nesterov" if group["nesterov"] else "momentum"
    if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
        if group["amsgrad"] or group.get("fused") or group.get("decoupled_weight_decay") is None:
            return None
        if isinstance(group["lr"], torch.Tensor):
            return None
        return "adamw" if group["decoupled_weight_decay"] else "adam"
    return None


def _advance_schedule(scheduler, n: int) -> None:
    """As n `scheduler.step()` calls (the schedule's lr is a closed form of t: one computation does). It also
    resets an lr that a callback changed, as the schedule does on the autograd path."""
    if n == 0:
        return
    with warnings.catch_warnings():  # the fast path never calls optimizer.step(), which torch checks for
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        scheduler.step(n)


# --------------------------------------------------------------------------------------------- C kernel


_FP = ctypes.POINTER(ctypes.c_float)


class _Net(ctypes.Structure):
    """Mirrors `Net` in kernels/mlp_online.c."""

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
            return lib
    return None


class OnlineKernel:
    """One-sample updates in compiled code: forward, loss, backward and the optimizer rule fused per row.

    Reads and writes the model's parameters and torch's own optimizer state (momentum_buffer, exp_avg,
    exp_avg_sq, step) in place, so autograd, checkpoints and later runs see the same state.
    """

    max_run = 4096  # updates per call (~0.1 s): bounds how late a max_seconds budget or a progress bar acts

    def __init__(self, model: MLP, optimizer: torch.optim.Optimizer, data: Dataset):
        self.linears, self.act = mlp_layers(model)
        self.params = list(model.parameters())
        self.optimizer = optimizer
        self.kind = optimizer_kind(optimizer, self.params)
        self.x, self.y, self.task = data.x_train, data.y_train, data.task
        self.n_features = data.n_features
        self._net = None

    def _bind(self) -> _Net:
        """Point the kernel at the parameters and optimizer state (at the first run, after any resume)."""
        fp = _FP
        states = [self.optimizer.state[p] for p in self.params]
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
        self._work = torch.zeros(3 * sum(dims))
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
        return net

    def apply(self, block: list[Update], scheduler) -> tuple[torch.Tensor, bool]:
        """Train the run. Returns (losses of the updates applied, whether all were), stopping before the
        first update whose loss is not finite."""
        if self._net is None:
            self._net = self._bind()
        net, group = self._net, self.optimizer.param_groups[0]
        # Hyperparameters are read at every run: a callback may have changed them between updates.
        net.lr, net.weight_decay, net.momentum = group["lr"], group["weight_decay"], group.get("momentum", 0.0)
        (net.beta1, net.beta2), net.eps = group.get("betas", (0.9, 0.999)), group.get("eps", 1e-8)
        idx = torch.cat([u.chunks[0] for u in block])
        losses = torch.empty(len(block))
        adam = self.kind in ("adam", "adamw")
        if adam:
            step_t = self.optimizer.state[self.params[0]]["step"]
            self._net.step = float(step_t)
        y_int = self.y.data_ptr() if self.task == "classification" else None
        y_float = None if y_int else self.y.data_ptr()
        done = kernel().cadence_mlp_online(
            ctypes.byref(self._net),
            self.x.data_ptr(),
            self.n_features,
            y_int,
            y_float,
            idx.data_ptr(),
            len(block),
            losses.data_ptr(),
        )
        if adam:
            for p in self.params:
                self.optimizer.state[p]["step"] += done
        _advance_schedule(scheduler, done)
        return losses[:done], done == len(block)


# -------------------------------------------------------------------------------------- torch-ops engine


class BatchEngine:
    """Batches through hand-derived gradients in torch ops: no autograd graph, gathered inputs in reused
    buffers, and for plain SGD the update fused into the gradient's matrix product (W.addmm_(d.T, a, alpha=-lr)).
    Other optimizers get the summed gradient in `.grad` and torch's own `optimizer.step()`."""

    max_run = 16  # each update is its own Python call here: longer runs would gain nothing

    def __init__(self, model: MLP, optimizer: torch.optim.Optimizer, data: Dataset):
        self.linears, act = mlp_layers(model)
        self.act = {0: torch.relu_, 1: torch.tanh_, 2: torch.sigmoid_, 3: lambda z: F.leaky_relu_(z, 0.01)}[act]
        self.act_code = act
        self.params = list(model.parameters())
        self.optimizer = optimizer
        self.kind = optimizer_kind(optimizer, self.params)
        self.x = data.x_train.reshape(len(data.x_train), -1)
        self.y, self.task = data.y_train, data.task
        self._bufs: dict[int, list[torch.Tensor]] = {}

    def _buffers(self, rows: int) -> list[torch.Tensor]:
        """Reused outputs for a chunk of `rows` samples: the gathered inputs, each layer's output and each
        layer's input gradient (fresh allocations of this size would fault in new pages every update)."""
        if rows not in self._bufs:
            widths = [self.x.shape[1]] + [lin.out_features for lin in self.linears]
            self._bufs[rows] = [torch.empty(rows, w) for w in widths] + [
                torch.empty(rows, w) for w in widths[1:-1]
            ]
        return self._bufs[rows]

    def _mask(self, below: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """below * d(activation)/dz, the derivative taken from the activation's output as torch's backward does."""
        if self.act_code == 0:  # autograd's own ReLU backward, written in place
            return torch.ops.aten.threshold_backward.grad_input(below, a, 0, grad_input=below)
        if self.act_code == 1:
            return below.mul_(1 - a * a)
        if self.act_code == 2:
            return below.mul_((1 - a) * a)
        return below.mul_(torch.where(a > 0, 1.0, 0.01))

    def _forward(self, idx: torch.Tensor, n_samples: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Activations of every layer, the loss (sum / n_samples) and d loss / d outputs."""
        buf = self._buffers(len(idx))
        acts = [torch.index_select(self.x, 0, idx, out=buf[0])]
        for i, lin in enumerate(self.linears):
            z = torch.addmm(lin.bias, acts[-1], lin.weight.t(), out=buf[i + 1])
            acts.append(self.act(z) if i < len(self.linears) - 1 else z)
        out, y = acts.pop(), self.y[idx]
        # The output gradient in autograd's own order of operations (backward of `sum / n`, then of
        # nll_loss and log_softmax, or of mse_loss), so that Adam, which magnifies rounding in tiny
        # gradients, sees the very same numbers.
        g = 1.0 / n_samples
        if self.task == "classification":
            log_p = torch.log_softmax(out, dim=1)
            loss = F.nll_loss(log_p, y, reduction="sum") / n_samples
            nll_grad = torch.zeros_like(out).index_put_((torch.arange(len(y)), y), torch.tensor(-g))
            delta = torch.ops.aten._log_softmax_backward_data(nll_grad, log_p, 1, out.dtype)
        else:
            loss = F.mse_loss(out.reshape(y.shape), y, reduction="sum") / n_samples
            delta = (2.0 * (out.reshape(y.shape) - y)).mul_(g).reshape(out.shape)
        return acts, loss, delta

    def _below(self, i: int, delta: torch.Tensor, acts: list[torch.Tensor]) -> torch.Tensor:
        """The gradient wrt the pre-activation of layer i-1, from layer i's output gradient and old weights."""
        out = self._buffers(len(delta))[len(self.linears) + i]
        return self._mask(torch.mm(delta, self.linears[i].weight, out=out), acts[i])

    def _backward(self, acts: list[torch.Tensor], delta: torch.Tensor, first: bool) -> None:
        """Sum this chunk's gradients into `.grad` (set on the first chunk)."""
        for i in range(len(self.linears) - 1, -1, -1):
            lin = self.linears[i]
            gw, gb = delta.t() @ acts[i], delta.sum(0)
            if first:
                lin.weight.grad, lin.bias.grad = gw, gb
            else:
                lin.weight.grad += gw
                lin.bias.grad += gb
            if i > 0:
                delta = self._below(i, delta, acts)

    def _fused_sgd(self, acts: list[torch.Tensor], delta: torch.Tensor, lr: float) -> None:
        """Plain SGD on one chunk: each layer's input gradient first, then W <- W - lr * d^T a in one GEMM."""
        for i in range(len(self.linears) - 1, -1, -1):
            lin = self.linears[i]
            below = self._below(i, delta, acts) if i > 0 else None
            lin.weight.addmm_(delta.t(), acts[i], alpha=-lr)
            lin.bias.add_(delta.sum(0), alpha=-lr)
            delta = below

    def apply(self, block: list[Update], scheduler) -> tuple[torch.Tensor, bool]:
        """Train the run. Returns (losses of the updates applied, whether all were)."""
        losses = torch.empty(len(block))
        group = self.optimizer.param_groups[0]
        lr, fused_sgd = group["lr"], self.kind == "sgd" and group["weight_decay"] == 0
        done = 0
        with torch.no_grad():
            for update in block:
                if fused_sgd and len(update.chunks) == 1:
                    acts, loss, delta = self._forward(update.chunks[0], update.n_samples)
                    if not math.isfinite(loss):
                        break
                    self._fused_sgd(acts, delta, lr)
                else:
                    loss = torch.zeros(())
                    for c, idx in enumerate(update.chunks):
                        acts, chunk_loss, delta = self._forward(idx, update.n_samples)
                        self._backward(acts, delta, first=c == 0)
                        loss += chunk_loss
                    if not math.isfinite(loss):
                        self.optimizer.zero_grad(set_to_none=True)
                        break
                    self.optimizer.step()
                losses[done] = loss
                done += 1
        _advance_schedule(scheduler, done)
        return losses[:done], done == len(block)
