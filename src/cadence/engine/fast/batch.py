"""The batch engine: updates of many samples for a built-in MLP through hand-derived gradients in torch ops,
with no autograd graph, gathered inputs in reused buffers, and for plain SGD the update fused into the
gradient's matrix product. Which runs may use it is predicate.py's business."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cadence.engine.fast.predicate import mlp_layers, optimizer_kind
from cadence.engine.step import Applied, gradients_finite, step_schedule
from cadence.engine.strategies import Update

# Half of float32's largest value: a bound on a gradient's sums below it leaves room for their rounding.
_SAFE = torch.finfo(torch.float32).max / 2


class BatchEngine:
    """Batches through hand-derived gradients in torch ops. Plain SGD on one chunk: every layer's gradient
    is checked finite, then W.addmm_(d.T, a, alpha=-lr) applies it without forming it. Other optimizers (and
    chunked updates) get the summed gradient in `.grad`, the same check as autograd's, and torch's own
    `optimizer.step()`."""

    name = "batch"
    max_run = 16  # each update is its own Python call here: longer runs would gain nothing

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

    def _deltas(self, acts: list[torch.Tensor], delta: torch.Tensor) -> list[torch.Tensor]:
        """The gradient wrt each layer's output, from the top one and the old weights."""
        deltas = [delta]
        for i in range(len(self.linears) - 1, 0, -1):
            deltas.insert(0, self._below(i, deltas[0], acts))
        return deltas

    def _fused_finite(self, loss: torch.Tensor, acts: list[torch.Tensor], deltas: list[torch.Tensor]) -> bool:
        """Whether the loss and every layer's gradient (d^T a and the column sums of d) are finite, before any
        is formed. With one host sync: each sum of `rows` products is at most rows * max|d| * max|a|, so a
        bound below float32's range settles it; only a bound above it forms that gradient to look."""
        n = len(deltas)
        peaks = torch.stack([loss.abs(), *torch._foreach_norm([*deltas, *acts], float("inf"))]).tolist()
        if not math.isfinite(peaks[0]):
            return False
        rows = len(acts[0])
        for i, (d, a) in enumerate(zip(peaks[1 : n + 1], peaks[n + 1 :], strict=True)):
            if not (math.isfinite(d) and math.isfinite(a)):
                return False
            if rows * d * max(a, 1.0) >= _SAFE:
                grad = deltas[i].t() @ acts[i]
                if not (torch.isfinite(grad).all() and torch.isfinite(deltas[i].sum(0)).all()):
                    return False
        return True

    def apply(self, updates: Sequence[Update]) -> Applied:
        """Train the updates in order, stopping before the first whose loss or gradient is not finite."""
        losses = torch.empty(len(updates))
        group = self.optimizer.param_groups[0]
        lr, fused_sgd = group["lr"], self.kind == "sgd" and group["weight_decay"] == 0
        done = 0
        with torch.no_grad():
            for update in updates:
                if fused_sgd and len(update.chunks) == 1:
                    acts, loss, delta = self._forward(update.chunks[0], update.n_samples)
                    deltas = self._deltas(acts, delta)
                    if not self._fused_finite(loss, acts, deltas):
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
