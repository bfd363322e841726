"""Resuming: which checkpoint, whether anything is left to train, and the directory's claim that leaves no trace when refused."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from flint.recipes import RECIPES
from flint.recipes.app.config import UsageError, resolve_config
from flint.recipes.app.resume import check_before_writing, claim_run_dir, last_summary, nothing_left, resume_point
from flint.recipes.app.rundir import RunDir

DATA = {"train": 10, "val": 2, "samples": [[1.0]]}


def config(tmp_path, **given):
    return resolve_config(RECIPES["lenet"], {"output_dir": str(tmp_path / "run"), **given})


def checkpoint(run: RunDir, iteration: int, epoch_length: int = 5, **extra) -> None:
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save({"trainer": {"iteration": iteration, "epoch_length": epoch_length}, **extra}, run.checkpoints / f"checkpoint_{iteration}.pt")


def test_a_new_run_needs_an_empty_place_and_resume_takes_the_newest_checkpoint(tmp_path):
    cfg = config(tmp_path)
    run = RunDir(cfg.output_dir)
    assert resume_point(cfg) is None  # nothing there: a new run
    checkpoint(run, 5)
    with pytest.raises(UsageError, match="already holds a run; pass --resume to continue it, --overwrite to start afresh, or choose another -o"):
        resume_point(cfg)
    assert resume_point(replace(cfg, resume="")) == "latest"
    checkpoint(run, 10)
    assert resume_point(replace(cfg, resume=str(run.path))) == run.checkpoints / "checkpoint_10.pt"  # a run directory: its newest
    with pytest.raises(UsageError, match="no such checkpoint file or run directory"):
        resume_point(replace(cfg, resume=str(tmp_path / "missing.pt")))


def test_a_resume_refuses_changed_options_and_fingerprints_naming_them(tmp_path):
    cfg = replace(config(tmp_path), resume="")
    run = RunDir(cfg.output_dir)
    run.path.mkdir(parents=True)
    saved = {**json.loads(json.dumps(cfg.__dict__)), "batch_size": 32, "fingerprint": {"data": DATA}}
    run.config_file.write_text(json.dumps(saved))
    with pytest.raises(UsageError) as error:
        resume_point(cfg, {"data": {**DATA, "train": 9}})
    assert str(error.value) == (f"--resume: the run in {run.path} was trained with batch_size=32, now 64; since then the data changed "
                                "(10 training samples, now 9); resume it unchanged, or start a new run from its weights with "
                                f"--init-from {run.path}")  # fmt: skip


def test_nothing_is_left_when_the_checkpoint_has_every_epoch_or_stopped_early(tmp_path):
    cfg = replace(config(tmp_path, epochs=2, early_stopping=3), resume="")
    run = RunDir(cfg.output_dir)
    checkpoint(run, 5)
    assert nothing_left(cfg, "latest") is None  # epoch 1 of 2
    checkpoint(run, 10)
    assert nothing_left(cfg, "latest") == "completed 2 epochs"
    checkpoint(run, 15, early_stopping={"counter": 3})
    assert nothing_left(replace(cfg, epochs=4), "latest") == "stopped early after epoch 3"
    assert nothing_left(cfg, None) is None


def test_a_dangling_checkpoints_link_and_a_progress_file_in_nowhere_are_refused_first(tmp_path):
    cfg = config(tmp_path)
    run = RunDir(cfg.output_dir)
    run.path.mkdir(parents=True)
    run.checkpoints.symlink_to(tmp_path / "gone")
    with pytest.raises(UsageError, match="checkpoints is a symbolic link to .*gone, which does not exist"):
        check_before_writing(cfg)
    run.checkpoints.unlink()
    with pytest.raises(UsageError, match="is not a writable directory"):
        check_before_writing(replace(cfg, progress_file=str(tmp_path / "nowhere" / "p.json")))


def test_a_refused_claim_removes_the_directories_it_made_and_a_granted_one_holds_the_lock(tmp_path):
    cfg = config(tmp_path)
    cfg.output_dir = str(tmp_path / "a" / "b" / "run")

    def refused():
        raise UsageError("the recipe's data is bad")

    with pytest.raises(UsageError, match="the recipe's data is bad"), claim_run_dir(cfg, refused):
        pass
    assert not (tmp_path / "a").exists()  # every directory the lock made, gone again
    with claim_run_dir(cfg, lambda: SimpleNamespace(fingerprint=None, module=None)) as (prepared, resume, done):
        assert (resume, done) == (None, None) and RunDir(cfg.output_dir).status() == "running"
    assert RunDir(cfg.output_dir).in_use() is None


def test_a_finished_runs_summary_is_its_last_one(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_file.write_text(json.dumps({"phase": "summary", "status": "completed", "epochs": 4, "best_value": 0.9}) + "\n")
    assert last_summary(run, "completed 4 epochs") == {"phase": "summary", "status": "completed", "epochs": 4, "best_value": 0.9,
                                                       "nothing_to_do": "completed 4 epochs"}  # fmt: skip
