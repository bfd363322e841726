"""Checkpoints written by earlier Flint versions still resume exactly."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from flint.handlers import Checkpointing
from flint.recipes.app.cli import main

DATA = Path(__file__).resolve().parents[2] / "data"
OPTIONS = ["run", "ffnn", "--epochs", "6", "--log-interval", "1", "--lr-mode", "cosine", "--early-stopping", "3", "--no-progress"]
TIMING = ("epoch_time", "samples_per_sec", "avg_epoch_time", "wall_time", "model_tflops")


def trained(run_dir: Path, after: int) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records
            if r["phase"] in ("batch", "training", "validation") and r["iteration"] > after]  # fmt: skip


@pytest.mark.parametrize("commit", ["849c816", "bc273ed"])
def test_a_mid_epoch_checkpoint_of_an_earlier_flint_resumes_as_an_unbroken_run(tmp_path, commit):
    run = tmp_path / "old"
    shutil.copytree(DATA / f"run_{commit}", run)
    assert main([*OPTIONS, "--resume", "-o", str(run)]) == 0
    assert main([*OPTIONS, "-o", str(tmp_path / "straight")]) == 0
    resumed = torch.load(Checkpointing.find_latest(run / "checkpoints"), weights_only=True)
    straight = torch.load(Checkpointing.find_latest(tmp_path / "straight" / "checkpoints"), weights_only=True)
    assert resumed["trainer"]["iteration"] == straight["trainer"]["iteration"] == 12
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    # From iteration 7 on (epoch 4, resumed after its first batch): the same batch, epoch and validation records.
    assert trained(run, 6) == trained(tmp_path / "straight", 6) != []
    assert resumed["early_stopping"] == straight["early_stopping"]
