"""``flint lr-find``: Ignite's ``FastaiLRFinder`` on a recipe's own training step, the loss against the
learning rate in ``lr_find.png``, and the suggested learning rate."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from flint.recipes.app.config import Config, UsageError
from flint.recipes.app.registry import Recipe
from flint.recipes.app.rundir import RunDir

__all__ = ["LRSweep", "lr_find"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LRSweep:
    """The learning rates tried: ``num_iter`` steps from ``start_lr`` to ``end_lr`` on a log scale (as ``--lr``:
    param groups with an ``lr_mult`` keep their ratio). Checked when made.

    Example:
        >>> LRSweep(1e-6, 1.0, 50).num_iter
        50
        >>> LRSweep(1.0, 0.1)
        Traceback (most recent call last):
        ...
        flint.recipes.app.config.UsageError: --start-lr 1 must be below --end-lr 0.1
    """

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 100

    def __post_init__(self) -> None:
        for name, value in (("--start-lr", self.start_lr), ("--end-lr", self.end_lr)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise UsageError(f"{name} {value}: must be a finite number > 0")
        if self.start_lr >= self.end_lr:
            raise UsageError(f"--start-lr {self.start_lr:g} must be below --end-lr {self.end_lr:g}")
        if not isinstance(self.num_iter, int) or isinstance(self.num_iter, bool) or not 3 <= self.num_iter <= 10**6:
            raise UsageError(f"--num-iter {self.num_iter}: must be an integer from 3 to 1,000,000")


def lr_find(cfg: Config, recipe: Recipe, sweep: LRSweep = LRSweep()) -> tuple[float, Path]:
    """Run Ignite's ``FastaiLRFinder`` on ``cfg``'s training step (its model, ``init_from`` weights,
    optimizer, param groups, loss, batches, update cycle, AMP); returns the suggested ``lr`` and the
    plot ``lr_find.png`` written (atomically) to ``cfg.output_dir``.

    The finder raises the learning rate of every param group each iteration and stops early once the
    loss diverges; the suggestion is the learning rate of the steepest descent of the smoothed loss
    before its minimum. Nothing of the run directory is read or written but the plot.

    Raises:
        RuntimeError: the loss curve had no descent to suggest from (Ignite's message: try a lower
            ``start_lr`` or a higher ``end_lr``).
    """
    from ignite.handlers import FastaiLRFinder

    from flint.recipes.app.init_from import load_init_weights
    from flint.recipes.app.train import Place, build_data, build_engines, build_model, prepare

    place = Place.here(cfg)
    parts = prepare(cfg, recipe)
    if cfg.init_from is not None:
        load_init_weights(parts.module, cfg.init_from, cfg.style)
    data = build_data(cfg, parts, place)
    model = build_model(cfg, cfg.task, parts, place, data)
    trainer, _ = build_engines(cfg, model, place, parts.fingerprint)
    factors = [group["lr"] / cfg.lr for group in model.optimizer.param_groups]  # lr_mult's ratios
    finder = FastaiLRFinder()
    to_save = {"model": model.module, "optimizer": model.optimizer}
    logger.info("LR finder: %s on %s, %d iterations from lr %g to %g", recipe.name, cfg.dataset, sweep.num_iter, sweep.start_lr, sweep.end_lr)
    with finder.attach(trainer, to_save, output_transform=lambda output: output["loss"], num_iter=sweep.num_iter,
                       start_lr=[sweep.start_lr * f for f in factors], end_lr=[sweep.end_lr * f for f in factors]) as finding:  # fmt: skip
        finding.run(data.train_loader, max_epochs=math.ceil(sweep.num_iter / len(data.train_loader)))
    results = finder.get_results()
    lrs = [(lr[0] if isinstance(lr, list) else lr) / factors[0] for lr in results["lr"]]
    suggested = finder.lr_suggestion()
    suggested = (suggested[0] if isinstance(suggested, list) else suggested) / factors[0]
    path = _plot(lrs, results["loss"], suggested, RunDir(cfg.output_dir).lr_find_file, f"{recipe.name} on {cfg.dataset}")
    return float(suggested), path


def _plot(lrs: list[float], losses: list[float], suggested: float, path: Path, title: str) -> Path:
    """The smoothed loss against the learning rate (log scale), the suggestion marked; written atomically.

    Drawn here rather than by ``FastaiLRFinder.plot``, which draws one line per param group (two
    identical ones for the weight-decay split) and calls ``plt.show()``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flint.recipes.app.report import save_png

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(lrs, losses, "-", lw=1.5)
    ax.plot([suggested], [losses[lrs.index(suggested)]], "o", color="tab:red", ms=8, label=f"suggested lr {suggested:.3g}")
    ax.set(xscale="log", xlabel="learning rate (--lr)", ylabel="training loss (smoothed)", title=f"LR finder: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, path, "LR finder plot")
