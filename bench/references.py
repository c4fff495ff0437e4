"""The reference systems, written as their users write them. Each trains the same model from the same
initial weights and returns samples/s per timed segment (and the trained model where accuracy matters).

- tutorial: PyTorch's quickstart loop over a DataLoader with a per-sample ToTensor+Normalize transform on a
  PIL image (torchvision's transforms written out in torch ops: torchvision is not installed here);
- plain: the eager loop over preloaded tensors that a performance-minded user writes;
- deep-river: `Classifier.learn_one` on river's dict samples;
- Lightning: `Trainer.fit` over a DataLoader of preloaded tensors.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data import Dataset as TorchDataset

import fashion


def to_tensor_normalize(image: Image.Image) -> torch.Tensor:
    """torchvision's ToTensor() then Normalize((0.2860,), (0.3530,)) on one PIL image: [1, 28, 28] float."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).to(torch.float32).div(255.0).unsqueeze(0)
    return (x - fashion.MEAN) / fashion.STD


class FashionMNIST(TorchDataset):
    """Like torchvision.datasets.FashionMNIST: a PIL image and an int label per item, transformed per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i], mode="L")
        return (self.transform(image) if self.transform else image), int(self.labels[i])


def _segment_rates(marks: list[int], times: list[float]) -> list[float]:
    starts = [0, *marks[:-1]]
    t_starts = times[:-1]
    return [(m - s) / (t1 - t0) for s, m, t0, t1 in zip(starts, marks, t_starts, times[1:], strict=True)]


def tutorial(model: nn.Module, images, labels, batch_size: int, n_samples: int, lr: float, segments: int = 3):
    """The quickstart loop; timed from the first batch (worker start-up excluded) over `segments` parts."""
    loader = DataLoader(
        FashionMNIST(images, labels, transform=to_tensor_normalize),
        batch_size=batch_size,
        shuffle=True,
        num_workers=2,
        generator=torch.Generator().manual_seed(0),
    )
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    marks = [n_samples * (k + 1) // segments for k in range(segments)]
    times, seen, running_loss = [], 0, 0.0
    model.train()
    for x, y in loader:
        if not times:
            times.append(time.perf_counter())
        pred = model(x)
        loss = loss_fn(pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        running_loss += loss.item()
        seen += len(x)
        if seen >= marks[len(times) - 1]:
            times.append(time.perf_counter())
            if len(times) > segments:
                break
    return _segment_rates(marks, times)


def plain(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, n_samples: int, lr: float, segments=3
):
    """Eager PyTorch over preloaded tensors: shuffle, index, zero_grad/forward/loss/backward/step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    marks = [n_samples * (k + 1) // segments for k in range(segments)]
    times = [time.perf_counter()]
    model.train()
    for start in range(0, n_samples, batch_size):
        idx = perm[start : start + batch_size]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        if start + len(idx) >= marks[len(times) - 1]:
            times.append(time.perf_counter())
    return _segment_rates(marks, times)


def plain_full_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, updates: int) -> list[float]:
    """Seconds per exact-gradient update: the whole training set through one forward/backward."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    out = []
    for _ in range(updates):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        out.append(time.perf_counter() - t0)
    return out


def deep_river(model: nn.Module, x: np.ndarray, y: np.ndarray, n_samples: int, lr: float, segments: int = 3):
    """deep-river's Classifier.learn_one on river's dict samples; only learn_one is timed."""
    from deep_river.classification import Classifier
    from river import stream

    clf = Classifier(module=model, loss_fn="cross_entropy", optimizer_fn="sgd", lr=lr, seed=0)
    # Labels map to outputs by their rank among the classes seen so far: declare all ten up front.
    clf.observed_classes.update(range(10))
    per = n_samples // segments
    rates, spent = [], 0.0
    for done, (xi, yi) in enumerate(stream.iter_array(x[:n_samples], y[:n_samples]), start=1):
        t0 = time.perf_counter()
        clf.learn_one(xi, int(yi))
        spent += time.perf_counter() - t0
        if done % per == 0:
            rates.append(per / spent)
            spent = 0.0
    return rates[:segments]


def lightning(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float, epochs: int = 3):
    """Lightning's Trainer.fit, one epoch per timed segment (set-up and teardown excluded by a callback)."""
    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no banner lines in the bench's output

    class Module(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr)

    class EpochTimer(L.Callback):
        def __init__(self):
            self.seconds = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds.append(time.perf_counter() - self.t0)

    timer = EpochTimer()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(model), loader)
    return [len(x) / s for s in timer.seconds]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())
