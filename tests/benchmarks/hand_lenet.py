"""LeNet on the digits, trained by a hand-written loop that does the work of ``flint run lenet``.

The baseline of the whole-process comparison (``bench_loop.py --process``, docs/performance.md): what
a careful person would write by hand to get what ``flint run lenet --epochs 15`` gives with its
defaults. It imports only torch, scikit-learn (the digits) and tensorboardX, not Flint or Ignite;
the model and the data are copies of ``flint.recipes.builtin.models.LeNet`` and ``flint.recipes.builtin.data.digits``, so from
the same seed it trains the same weights, and the comparison checks that both runs end with the
same validation accuracy. Run it from anywhere::

    python tests/benchmarks/hand_lenet.py -o /tmp/hand_run --epochs 15

The same work as Flint's run: seed 42; digits (1,438 training images, 359 validation) through a
``DataLoader``, batch 64, each epoch's order a permutation seeded with ``seed + epoch`` (as
``flint.engine.EpochSampler``), validation batch 256; SGD lr 0.05, momentum 0.9, weight decay 1e-4 on
weights only; cross-entropy; a cosine LR set before every step; every 50 iterations a batch record
(interval loss, samples/s over the interval, LRs, running training accuracy) and an LR record; per
epoch a training record (accuracy, mean loss, epoch time, LRs), weight histograms, the last step's
gradient histograms, validation loss and accuracy; the latest two checkpoints and the best one,
each written to a temp file, fsync'd and renamed; every record to train.log, metrics.jsonl and
TensorBoard in Flint's formats; the run's config in config.json; a summary record at the end;
SIGTERM or Ctrl-C saves a checkpoint and exits 3. The running loss and accuracy stay on the device
and are read at log points and epoch ends only.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tensorboardX import SummaryWriter  # type: ignore[import-untyped]
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

log = logging.getLogger("hand_lenet")

CONFIG = {"batch_size": 64, "lr": 0.05, "momentum": 0.9, "wd": 1e-4, "log_interval": 50, "val_batch_size": 256}


class LeNet(nn.Module):
    """LeNet-5 with BatchNorm for 1x28x28 images (``flint.recipes.builtin.models.LeNet``, layer for layer)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 6, 3, 1, 2), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.fc1 = nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.BatchNorm1d(120), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), nn.BatchNorm1d(84), nn.ReLU(), nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        return self.fc2(self.fc1(x.flatten(1)))


def digits(size: int = 28, val_fraction: float = 0.2, split_seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 digits upsampled to 28x28 and standardised, split 80/20 (``flint.recipes.builtin.data.digits``)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(raw.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_val = round(len(y) * val_fraction)
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx])


class Records:
    """Each record as a log line, a JSON line and TensorBoard scalars, in the formats of Flint's sinks."""

    POSITION = ("phase", "epoch", "iteration", "samples")

    def __init__(self, out: Path) -> None:
        self.jsonl = open(out / "metrics.jsonl", "a", encoding="utf-8")
        self.writer = SummaryWriter(logdir=str(out))

    def emit(self, record: dict[str, Any]) -> None:
        phase = record["phase"]
        head = f"[Epoch {record['epoch']}] " if "epoch" in record else ""
        if phase == "batch":
            head = f"[Epoch {record['epoch']}] [iter {record['iteration']}, {record['samples']} samples] "
        body = " ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k not in self.POSITION)
        log.log(logging.DEBUG if phase == "lr" else logging.INFO, "%s%s: %s", head, phase, body)
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self.jsonl.write(json.dumps(clean) + "\n")
        self.jsonl.flush()
        if phase == "summary":
            return
        prefix, step = ("training" if phase == "lr" else phase), record["samples"]
        for key, value in record.items():
            if key in self.POSITION or (key == "lr" and phase != "lr"):
                continue
            tag = f"{prefix}/{key.replace('_', '-')}"
            if isinstance(value, list):
                for i, v in enumerate(value):
                    self.writer.add_scalar(f"{tag}/group_{i}", float(v), step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, float(value), step)
        if phase in ("training", "validation"):
            self.writer.flush()

    def histograms(self, kind: str, model: nn.Module, step: int) -> None:
        for name, p in model.named_parameters():
            t = p if kind == "weights" else p.grad
            if t is None:
                continue
            values = t.detach().float().cpu()
            if not all(math.isfinite(v) for v in torch.aminmax(values)):  # a histogram of NaN cannot be drawn
                log.warning("Not writing %s/%s at %d samples: it holds NaN or Inf", kind, name, step)
                continue
            self.writer.add_histogram(f"{kind}/{name}", values, step, bins=64)

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, rename: ``path`` is whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _finite(value: float, iteration: int) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"the training loss became nan or inf at or before iteration {iteration}")
    return value


def setup_logging(out: Path) -> None:
    """INFO lines to the terminal, everything to out/train.log (as ``flint run``)."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    file = logging.FileHandler(out / "train.log", encoding="utf-8")
    file.setLevel(logging.DEBUG)
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    root.addHandler(file)


def train(out: Path, epochs: int, seed: int) -> str:
    """Train; returns ``"completed"``, or ``"interrupted"`` after a stop signal (a checkpoint saved)."""
    cfg = {"recipe": "lenet", "dataset": "digits", "epochs": epochs, "seed": seed, **CONFIG}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    log.info("Run config: %s", json.dumps(cfg))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pin = device.type == "cuda"
    train_set, val_set = digits()
    val_loader = DataLoader(val_set, batch_size=CONFIG["val_batch_size"], pin_memory=pin)
    model = LeNet().to(device)
    weights = [p for p in model.parameters() if p.dim() > 1]  # weight decay on weights, not biases or BatchNorm
    others = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": weights, "weight_decay": CONFIG["wd"]}, {"params": others, "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=CONFIG["lr"], momentum=CONFIG["momentum"])
    loss_fn = nn.CrossEntropyLoss()
    records = Records(out)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir()
    latest: list[Path] = []
    best_acc, best_epoch, best_path = -math.inf, 0, None
    batch, every = CONFIG["batch_size"], CONFIG["log_interval"]
    steps = math.ceil(len(train_set) / batch)
    total_steps = epochs * steps
    stop = []  # a stop signal: save at the next step and exit 3
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda signum, frame: stop.append(signum))

    def lrs() -> list[float]:
        return [float(g["lr"]) for g in optimizer.param_groups]

    def state(epoch: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "iteration": iteration,
                "samples": samples, "best_accuracy": best_acc, "best_epoch": best_epoch, "rng": torch.get_rng_state()}  # fmt: skip

    def save_latest(epoch: int) -> None:
        path = ckpt_dir / f"checkpoint_{iteration}.pt"
        save_atomic(state(epoch), path)
        latest.append(path)
        if len(latest) > 2:
            latest.pop(0).unlink()

    iteration = samples = 0
    epoch_times: list[float] = []
    status = "completed"
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed + epoch))
        loader = DataLoader(train_set, batch_size=batch, sampler=order.tolist(), pin_memory=pin)
        model.train()
        epoch_start = window_start = time.perf_counter()
        window_samples = samples
        loss_sum = torch.zeros((), device=device)  # the epoch's sum of loss x batch size, on the device
        interval_mark = (0.0, 0)  # loss_sum and epoch samples at the last batch record
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for i, (x, y) in enumerate(loader, 1):
            factor = 0.5 * (1.0 + math.cos(math.pi * (iteration / total_steps)))  # cosine, per iteration
            for g in optimizer.param_groups:
                g["lr"] = CONFIG["lr"] * factor
            x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            y_pred = model(x)
            loss = loss_fn(y_pred, y)
            loss.backward()
            n = y.shape[0]
            iteration, samples, seen = iteration + 1, samples + n, seen + n
            if i == 1 or iteration % every == 0:  # the LR this step uses
                records.emit({"phase": "lr", "epoch": epoch, "iteration": iteration, "samples": samples, "lr": lrs()})
            if i == steps:
                records.histograms("grads", model, samples)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                loss_sum.add_(loss.detach(), alpha=n)
                correct.add_(torch.count_nonzero(y_pred.argmax(dim=1) == y))
            if iteration % every == 0:
                now, total = time.perf_counter(), loss_sum.item()
                records.emit({
                    "phase": "batch", "epoch": epoch, "iteration": iteration, "samples": samples,
                    "loss": _finite((total - interval_mark[0]) / (seen - interval_mark[1]), iteration),
                    "samples_per_sec": (samples - window_samples) / (now - window_start), "lr": lrs(),
                    "accuracy": correct.item() / seen,
                })  # fmt: skip
                interval_mark, window_start, window_samples = (total, seen), now, samples
            if stop:
                break
        epoch_times.append(time.perf_counter() - epoch_start)
        epoch_loss = _finite(loss_sum.item() / seen, iteration)
        if stop:  # saved where it stopped, as Flint's Preemption does
            save_latest(epoch)
            status = "interrupted"
            break
        records.emit({"phase": "training", "epoch": epoch, "iteration": iteration, "samples": samples,
                      "accuracy": correct.item() / seen, "loss": epoch_loss, "epoch_time": epoch_times[-1], "lr": lrs()})  # fmt: skip
        records.histograms("weights", model, samples)

        model.eval()
        val_loss = torch.zeros((), device=device)
        val_correct = torch.zeros((), dtype=torch.int64, device=device)
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
                y_pred = model(x)
                val_loss += loss_fn(y_pred, y) * y.shape[0]
                val_correct += torch.count_nonzero(y_pred.argmax(dim=1) == y)
        accuracy = val_correct.item() / len(val_set)
        records.emit({"phase": "validation", "epoch": epoch, "iteration": iteration, "samples": samples,
                      "loss": val_loss.item() / len(val_set), "accuracy": accuracy})  # fmt: skip
        if accuracy > best_acc:
            best_acc, best_epoch = accuracy, epoch
            path = ckpt_dir / f"best_checkpoint_{epoch}_accuracy={accuracy:.4f}.pt"
            save_atomic(state(epoch), path)
            if best_path is not None:
                best_path.unlink()
            best_path = path
        save_latest(epoch)
    later = epoch_times[1:] or epoch_times  # as Flint: the first epoch (warm-up) left out of the average
    average = sum(later) / len(later)
    records.emit({"phase": "summary", "status": status, "epochs": epoch, "samples": samples, "best_epoch": best_epoch,
                  "best_accuracy": best_acc if best_epoch else None, "avg_epoch_time": average, "stopped_early": False,
                  "samples_per_sec": samples / iteration * steps / average})  # fmt: skip
    records.close()
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="LeNet on the digits by a hand-written loop (Flint's lenet recipe, by hand).")
    parser.add_argument("-o", "--output-dir", required=True, help="the run's directory; must not hold a run already")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10, the lenet recipe's)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be a positive integer, got {args.epochs}")
    out = Path(args.output_dir)
    if (out / "metrics.jsonl").exists():
        parser.error(f"output dir {out} already holds a run; choose another -o")
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out)
    try:
        status = train(out, args.epochs, args.seed)
    except Exception as e:
        log.debug("Run failed", exc_info=True)
        print(f"hand_lenet: error: {e}", file=sys.stderr)
        return 1
    return 3 if status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
