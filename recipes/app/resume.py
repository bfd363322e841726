"""Resuming a run: which checkpoint, whether anything is left to train, and the run directory's claim.

Every check that can refuse a run happens here before anything is written (:func:`check_before_writing`),
so a refused ``flint run``/``flint resume`` or ``fit()`` leaves no trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from flint.handlers import CheckpointError, Checkpointing
from flint.recipes.app.config import Config, RunConfig, UsageError, config_changes, option_name, option_text, resume_refusal
from flint.recipes.app.fingerprint import fingerprint_changes
from flint.recipes.app.init_from import load_init_weights
from flint.recipes.app.rundir import RunDir
from flint.recipes.app.runs import trained_epochs

__all__ = ["resume_point", "nothing_left", "takes_over", "check_before_writing", "claim_run_dir", "last_summary", "load_resume_point"]

logger = logging.getLogger(__name__)


def resume_point(cfg: Config, fingerprint: dict[str, Any] | None = None) -> Path | str | None:
    """The checkpoint ``cfg`` resumes from, ``"latest"`` for the newest valid one in its output dir, or None.

    ``resume=PATH`` takes a checkpoint file, or a run (or checkpoints) directory's newest one.
    Refuses (``UsageError``) to mix a new run into an old one (unless :func:`takes_over` says the new
    run takes the directory over), and a resume that changes what is trained."""
    run, style = RunDir(cfg.output_dir), cfg.style
    out = run.path
    if cfg.resume is not None and takes_over(cfg) is None:  # a run taken over is not continued: nothing to compare
        try:
            saved = run.config() or {}
        except UsageError as e:  # an empty or half-written file
            logger.warning("Ignoring it: %s", e)
            saved = {}
        changes = config_changes(saved, asdict(cfg)), fingerprint_changes(saved.get("fingerprint"), fingerprint)
        refused = resume_refusal(f"the run in {out}", *changes, style, str(out))
        if refused:
            raise UsageError(refused)
    found = run.latest_checkpoint()
    if cfg.resume is None:
        if (found is not None or run.metrics_file.exists()) and takes_over(cfg) is None:
            raise UsageError(f"output dir {out} already holds a run; pass {option_text('resume', True, style)} to continue it, "
                             f"{option_text('overwrite', True, style)} to start afresh, or choose another "
                             f"{option_name('output_dir', style, short=True)}")  # fmt: skip
        return None
    if cfg.resume:
        path = Path(cfg.resume)
        if path.is_dir():
            newest = Checkpointing.find_latest(path / "checkpoints") or Checkpointing.find_latest(path)
            if newest is None:
                raise UsageError(f"{option_text('resume', cfg.resume, style)}: no checkpoint_<iteration>.pt in that directory or its checkpoints/")
            return newest
        if not path.is_file():
            raise UsageError(f"{option_text('resume', cfg.resume, style)}: no such checkpoint file or run directory")
        return path
    if found is None:
        if list(run.checkpoints.glob("*.corrupt")):
            raise CheckpointError(f"{option_text('resume', True, style)}: every checkpoint in {run.checkpoints} was set aside as .corrupt; "
                                  "refusing to start the run over there")  # fmt: skip
        logger.info("No checkpoint in %s yet: starting a new run", run.checkpoints)
        return None
    return "latest"


def takes_over(cfg: Config) -> str | None:
    """Why a new run of ``cfg`` takes over its output dir's earlier run, or None: ``overwrite`` was asked
    for (without ``resume``), or that run left no checkpoint (it failed, was aborted or killed: nothing to continue).

    The claim (:func:`claim_run_dir`) then clears the directory (:meth:`RunDir.clear`) before the run writes."""
    run = RunDir(cfg.output_dir)
    if cfg.overwrite and cfg.resume is None and run.has_run():
        return "overwrite"
    if run.failed_before_checkpoint():
        return "its run failed before writing a checkpoint"
    return None


def nothing_left(cfg: Config, resume: Path | str | None, fingerprint: dict[str, Any] | None = None) -> str | None:
    """Before anything is written: why the checkpoint to resume from needs no more training, or None.

    Also refuses (``UsageError``) a checkpoint trained under options that change what is trained."""
    if resume is None:
        return None
    candidates = Checkpointing.find_all(RunDir(cfg.output_dir).checkpoints) if resume == "latest" else [Path(resume)]
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # read lazily: the run loads it again
        except Exception:  # unreadable: the resume itself reports it (or sets it aside and takes the previous one)
            continue
        if not isinstance(state, dict):
            return None
        if "config" in state:
            RunConfig(cfg, fingerprint, path).load_state_dict(state["config"])
        epoch = trained_epochs(state) or 0
        stopper = state.get("early_stopping")
        if epoch >= cfg.epochs:
            return f"completed {epoch} epochs"
        if cfg.early_stopping and isinstance(stopper, dict) and stopper.get("counter", 0) >= cfg.early_stopping:
            return f"stopped early after epoch {epoch}"
        return None
    return None


def check_before_writing(cfg: Config, fingerprint: dict[str, Any] | None = None,
                         module: torch.nn.Module | None = None) -> tuple[Path | str | None, str | None]:  # fmt: skip
    """``(resume point, why nothing is left to train or None)``: every check that can refuse the run.

    Run before anything is written (see :func:`claim_run_dir`): a usage error leaves no trace. A new
    run's ``module`` gets the ``init_from`` weights here (:func:`flint.recipes.app.init_from.load_init_weights`:
    weights that do not fit are refused); a resumed one takes its checkpoint's later."""
    if cfg.progress_file is not None:
        folder = Path(cfg.progress_file).resolve().parent
        inside = folder.is_relative_to(Path(cfg.output_dir).resolve())  # made with the run's directory
        if not inside and (not folder.is_dir() or not os.access(folder, os.W_OK)):
            raise UsageError(f"{option_text('progress_file', cfg.progress_file, cfg.style)}: {folder} is not a writable directory")
    run = RunDir(cfg.output_dir)
    if run.checkpoints.is_symlink() and not run.checkpoints.exists():
        raise UsageError(f"output dir {run.path}: checkpoints is a symbolic link to {os.readlink(run.checkpoints)}, which does not exist")
    resume = resume_point(cfg, fingerprint)
    if resume is None and cfg.init_from is not None and module is not None:
        load_init_weights(module, cfg.init_from, cfg.style)
    return resume, nothing_left(cfg, resume, fingerprint)


@contextlib.contextmanager
def claim_run_dir(cfg: Config, prepare: Callable[[], Any]) -> Iterator[tuple[Any, Path | str | None, str | None]]:
    """Hold the run's directory for the block; yields ``(prepare(), resume point, why nothing is left or None)``.

    The lock comes first (:meth:`RunDir.lock`: a second run is told at once), then ``prepare()`` (the
    recipe's own code: its datasets and model; its result has a ``fingerprint``) and every check of
    :func:`check_before_writing`. If any of them fails, the directories the lock created are removed
    again: a refused run leaves no trace. Once all have passed, a new run that :func:`takes_over` the
    directory clears it (:meth:`RunDir.clear`)."""
    run = RunDir(cfg.output_dir)
    made = [d for d in (run.path, *run.path.parents) if not d.exists()]  # innermost first
    lock_made = not run.lock_file.exists()
    with run.lock(cfg.style):
        try:
            prepared = prepare()
            resume, done = check_before_writing(cfg, prepared.fingerprint, prepared.module)
            if cfg.progress_file is not None:
                Path(cfg.progress_file).resolve().parent.mkdir(parents=True, exist_ok=True)
        except BaseException:
            if lock_made:
                run.lock_file.unlink(missing_ok=True)
            for directory in made:
                with contextlib.suppress(OSError):  # one the recipe wrote into stays
                    directory.rmdir()
            raise
        why = takes_over(cfg) if resume is None else None
        if why is not None:
            kept = run.clear()
            logger.info("Output dir %s (%s): cleared for a new run%s", run.path, why, f"; its train.log is now {kept.name}" if kept else "")
        yield prepared, resume, done


def last_summary(run: RunDir, done: str) -> dict[str, Any]:
    """The summary record of a run with nothing left to train: the last one in its ``metrics.jsonl``."""
    summary = run.summary() or {"phase": "summary"}
    return {**summary, "status": "completed", "nothing_to_do": done}


def load_resume_point(checkpoints: Checkpointing, resume: Path | str | None, device: torch.device) -> Path | None:
    """Load what :func:`resume_point` chose; the checkpoint loaded, or None for a new run."""
    if resume == "latest":
        return checkpoints.load_latest_valid(map_location=device)
    if resume is not None:
        checkpoints.load(resume, map_location=device)
        return Path(resume)
    return None
