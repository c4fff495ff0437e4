"""The batch engine: updates of many samples for a built-in MLP through hand-derived gradients, with no
autograd graph. Where the compiled kernel is built and torch's BLAS exports sgemm, a whole run of updates
(an epoch of mini-batches, or full-batch updates chunk by chunk, gradients summed in place) goes to
kernels/mlp_batch.c in one call; otherwise torch ops, with gathered inputs in reused buffers and, for plain
SGD, the update fused into the gradient's matrix product. Which runs may use it is predicate.py's business."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cadence.engine.fast import compiled
from cadence.engine.fast.predicate import mlp_layers, optimizer_kind
from cadence.engine.step import Applied, gradients_finite, step_schedule
from cadence.engine.strategies import Update
from cadence.errors import DataError

# Half of float32's largest value: a bound on a gradient's sums below it leaves room for their rounding.
_SAFE = torch.finfo(torch.float32).max / 2


class _BatchKernel(compiled.Bound):
    """Runs of updates in kernels/mlp_batch.c, with the products in torch's sgemm."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x, y, task: str, sgemm: int):
        super().__init__(model, optimizer, task)
        self.x, self.y, self.sgemm = x, y, sgemm
        self.dims = [self.linears[0].in_features] + [lin.out_features for lin in self.linears]
        self.rows = 0  # rows of the largest chunk seen: the kernel's buffers hold one chunk
        self._idx = torch.empty(0, dtype=torch.int64)

    def apply(self, updates: Sequence[Update]) -> tuple[torch.Tensor, int]:
        chunks = [c for u in updates for c in u.chunks]
        self.rows = max(self.rows, *(len(c) for c in chunks))
        d, r = self.dims, self.rows
        work = (
            r * sum(d) + r * sum(d[1:]) + sum(a * b + b for a, b in zip(d[:-1], d[1:], strict=True)) + max(d[1:])
        )
        net = self.net(work)
        net.sgemm, net.max_rows = self.sgemm, r
        total = sum(u.n_samples for u in updates)
        if len(self._idx) < total:  # reused: a fresh 0.5 MB index tensor per epoch faults in new pages
            self._idx = torch.empty(total, dtype=torch.int64)
        idx = torch.cat(chunks, out=self._idx[:total])
        n_chunks = torch.tensor([len(u.chunks) for u in updates], dtype=torch.int64)
        sizes = torch.tensor([len(c) for c in chunks], dtype=torch.int64)
        losses = torch.empty(len(updates))
        y_int, y_float = self.targets(self.y)
        done = compiled.kernel().cadence_mlp_batch(
            ctypes.byref(net),
            self.x.data_ptr(),
            d[0],
            y_int,
            y_float,
            idx.data_ptr(),
            n_chunks.data_ptr(),
            sizes.data_ptr(),
            len(updates),
            losses.data_ptr(),
        )
        self.count_steps(done)
        if net.status == compiled.STATUS_BAD_TARGET:
            rows = torch.cat(updates[done].chunks)
            labels = self.y[rows]
            bad = int(rows[((labels < 0) | (labels >= d[-1])).nonzero()[0, 0]])
            raise DataError(
                f"label {int(self.y[bad])} at training row {bad} is outside the model's {d[-1]} classes; "
                f"the {done} updates before it were applied. "
                "Fix: map the labels to 0..K-1, or build the model with more outputs."
            )
        return losses[:done], done


class BatchEngine:
    """Batches through hand-derived gradients: in the compiled kernel (a run of updates per call) where it
    is built, else in torch ops. In torch ops, plain SGD on one chunk: every layer's gradient is checked
    finite, then W.addmm_(d.T, a, alpha=-lr) applies it without forming it. Other optimizers (and chunked
    updates) get the summed gradient in `.grad`, the same check as autograd's, and torch's own
    `optimizer.step()`."""

    name = "batch"

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, x, y, task: str, fallback=None
    ):
        self.linears, act = mlp_layers(model)
        self.act = {0: torch.relu_, 1: torch.tanh_, 2: torch.sigmoid_, 3: lambda z: F.leaky_relu_(z, 0.01)}[act]
        self.act_code = act
        self.params = list(model.parameters())
        self.optimizer, self.scheduler = optimizer, scheduler
        self.kind = optimizer_kind(optimizer, self.params)
        self.x = x.reshape(len(x), -1)
        self.y, self.task = y, task
        self.fallback = fallback  # set when a one-sample run takes this engine because the kernel is missing
        self._bufs: dict[int, list[torch.Tensor]] = {}
        self._flat: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        lib, sgemm = compiled.kernel(), compiled.torch_sgemm()
        self._kernel = _BatchKernel(model, optimizer, self.x, y, task, sgemm) if lib and sgemm else None
        # Updates per call: an epoch of mini-batches of 100 in the kernel (which bounds how late a max_seconds
        # budget acts to well under a second); in torch ops each update is its own Python call anyway.
        self.max_run = 1024 if self._kernel else 16

    def _buffers(self, rows: int) -> list[torch.Tensor]:
        """Reused outputs for a chunk of `rows` samples: the gathered inputs, each layer's output and each
        layer's input gradient (fresh allocations of this size would fault in new pages every update). The
        inputs and the hidden layers' outputs are views of one flat tensor, and the input gradients of
        another, so that `_fused_finite` takes each one's norm in one call (`self._flat[rows]`)."""
        if rows not in self._bufs:
            widths = [self.x.shape[1]] + [lin.out_features for lin in self.linears]
            flat_a, flat_d = torch.empty(rows * sum(widths[:-1])), torch.empty(rows * sum(widths[1:-1]))
            acts = _carve(flat_a, rows, widths[:-1])
            self._bufs[rows] = [*acts, torch.empty(rows, widths[-1]), *_carve(flat_d, rows, widths[1:-1])]
            self._flat[rows] = (flat_a, flat_d)
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

    def _deltas(self, acts: list[torch.Tensor], delta: torch.Tensor) -> list[torch.Tensor]:
        """The gradient wrt each layer's output, from the top one and the old weights."""
        deltas = [delta]
        for i in range(len(self.linears) - 1, 0, -1):
            deltas.insert(0, self._below(i, deltas[0], acts))
        return deltas

    def _fused_finite(
        self, loss: float, n_samples: int, acts: list[torch.Tensor], deltas: list[torch.Tensor]
    ) -> bool:
        """Whether the loss and every layer's gradient (d^T a, and the column sums of d) are finite, before
        any is formed.

        By Cauchy-Schwarz every entry of d^T a, and every partial sum a matrix product forms on the way, is
        at most |d|_F |a|_F, and a column sum of d at most sqrt(rows) |d|_F: bounds below float32's range
        settle it (a NaN or inf makes them fail). The bounds cost two dot products: a layer's |a|_F is at
        most that of the inputs and hidden outputs together, a hidden |d|_F that of all the input gradients
        together, and the output gradient's comes from the loss (cross-entropy:
        |softmax - onehot|^2 <= 2 per row, so |d| <= sqrt(2 rows) / n; squared error: |d| = 2 |out - y| / n
        = 2 sqrt(loss / n)). Only a failed bound forms that layer's gradient to look.
        """
        if not math.isfinite(loss):
            return False
        rows = len(acts[0])
        flat_a, flat_d = self._flat[rows]
        all_a, hidden_d = (math.sqrt(float(torch.dot(f, f))) for f in (flat_a, flat_d))
        if self.task == "classification":
            top = math.sqrt(2 * rows) / n_samples
        else:
            top = 2.0 * math.sqrt(loss / n_samples) * 1.001  # 1.001: the loss's own rounding
        a_norms = [all_a] * len(acts)
        d_norms = [hidden_d] * (len(deltas) - 1) + [top]
        root_rows = math.sqrt(rows)
        for i, (d, a) in enumerate(zip(d_norms, a_norms, strict=True)):
            if not (d * a < _SAFE and d * root_rows < _SAFE):  # False for NaN too
                grad = deltas[i].t() @ acts[i]
                if not (torch.isfinite(grad).all() and torch.isfinite(deltas[i].sum(0)).all()):
                    return False
        return True

    def apply(self, updates: Sequence[Update]) -> Applied:
        """Train the updates in order, stopping before the first whose loss or gradient is not finite."""
        if self._kernel is not None:
            losses, done = self._kernel.apply(updates)
            step_schedule(self.scheduler, done)
            return Applied(losses, done)
        losses = torch.empty(len(updates))
        group = self.optimizer.param_groups[0]
        lr, fused_sgd = group["lr"], self.kind == "sgd" and group["weight_decay"] == 0
        done = 0
        with torch.no_grad():
            for update in updates:
                if fused_sgd and len(update.chunks) == 1:
                    acts, loss, delta = self._forward(update.chunks[0], update.n_samples)
                    deltas = self._deltas(acts, delta)
                    if not self._fused_finite(float(loss), update.n_samples, acts, deltas):
                        break
                    for lin, d, a in zip(self.linears, deltas, acts, strict=True):
                        lin.weight.addmm_(d.t(), a, alpha=-lr)
                        lin.bias.add_(d.sum(0), alpha=-lr)
                else:
                    loss = torch.zeros(())
                    for c, idx in enumerate(update.chunks):
                        acts, chunk_loss, delta = self._forward(idx, update.n_samples)
                        self._backward(acts, delta, first=c == 0)
                        loss += chunk_loss
                    if not gradients_finite(loss, self.optimizer):
                        self.optimizer.zero_grad(set_to_none=True)
                        break
                    self.optimizer.step()
                losses[done] = loss
                done += 1
        step_schedule(self.scheduler, done)
        return Applied(losses[:done], done)


def _carve(flat: torch.Tensor, rows: int, widths: list[int]) -> list[torch.Tensor]:
    """Consecutive (rows, w) views of `flat`, one per width."""
    ends = [rows * sum(widths[:k]) for k in range(len(widths) + 1)]
    return [flat[a:b].view(rows, w) for a, b, w in zip(ends[:-1], ends[1:], widths, strict=True)]
