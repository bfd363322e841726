"""Whose directory: a run that failed before its first checkpoint is taken over, `--overwrite` replaces a finished
one, and from Python every refusal names Python arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from flint.recipes import fit
from flint.recipes.app.cli import main
from flint.recipes.app.rundir import RunDir
from tests.recipes.app.tiny import tiny_recipe


def summaries(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["phase"] == "summary"]


def test_a_failed_run_is_taken_over_and_overwrite_replaces_a_finished_one_keeping_the_logs_and_your_files(tmp_path, capsys):
    recipe, out = tiny_recipe(tmp_path), tmp_path / "run"
    assert main(["run", f"{recipe}:NAN", "--no-progress", "-o", str(out)]) == 1  # NaN at the first iteration: no checkpoint
    failed_log = (out / "train.log").read_text()
    assert [s["status"] for s in summaries(out)] == ["failed"] and "NonFiniteLoss" in failed_log
    (out / "notes.txt").write_text("mine")

    assert main(["run", f"{recipe}:NAN", "--no-progress", "-o", str(out)]) == 1  # no --resume, no --overwrite: taken over
    assert (out / "train.log.1").read_text() == failed_log and [s["status"] for s in summaries(out)] == ["failed"]
    failed_again = (out / "train.log").read_text()
    assert main(["run", recipe, "--no-progress", "-o", str(out), "--resume"]) == 0  # other options: nothing to continue, taken over
    assert [(out / f"train.log.{n}").read_text() for n in (1, 2)] == [failed_again, failed_log]
    assert "NonFiniteLoss" not in (out / "train.log").read_text() and [s["status"] for s in summaries(out)] == ["completed"]
    assert json.loads((out / "config.json").read_text())["recipe"] == recipe
    finished_log = (out / "train.log").read_text()

    capsys.readouterr()
    assert main(["run", recipe, "--no-progress", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"flint: error: output dir {out} already holds a run; pass --resume to continue it, "
                                               "--overwrite to start afresh, or choose another -o")  # fmt: skip
    assert main(["run", recipe, "--no-progress", "--overwrite", "--resume", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "flint: error: --overwrite starts afresh; it takes no --resume"

    assert main(["run", recipe, "--no-progress", "--epochs", "1", "--overwrite", "-o", str(out)]) == 0
    assert [(out / f"train.log.{n}").read_text() for n in (1, 2, 3)] == [finished_log, failed_again, failed_log]
    assert [(s["status"], s["epochs"]) for s in summaries(out)] == [("completed", 1)]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())  # the new run's only: epoch 1 of 15 iterations
    assert names[1:] == ["checkpoint_15.pt"] and names[0].startswith("best_checkpoint_1_accuracy=")
    assert (out / "notes.txt").read_text() == "mine"


def test_from_python_refusals_name_python_arguments(tmp_path):
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(x, (x[:, 0] > 0).long())
    options = {"epochs": 1, "batch_size": 16, "device": "cpu", "verbose": False}
    fit(torch.nn.Linear(4, 2), data, data, output_dir=tmp_path, **options)
    with pytest.raises(ValueError, match=rf"^output dir {tmp_path} already holds a run; pass resume=True to continue it, "
                       "overwrite=True to start afresh, or choose another output_dir$"):  # fmt: skip
        fit(torch.nn.Linear(4, 2), data, data, output_dir=tmp_path, **options)
    with pytest.raises(ValueError) as refused:
        fit(torch.nn.Linear(4, 2), data, data, output_dir=tmp_path, resume=True, **{**options, "batch_size": 32})
    assert str(refused.value) == (f"resume=True: the run in {tmp_path} was trained with batch_size=16, now 32; resume it unchanged, "
                                  f"or start a new run from its weights with init_from='{tmp_path}'")  # fmt: skip
    with RunDir(tmp_path).lock(), pytest.raises(ValueError, match="is in use by process .*; wait for it or choose another output_dir$"):
        fit(torch.nn.Linear(4, 2), data, data, output_dir=tmp_path, overwrite=True, **options)
    assert fit(torch.nn.Linear(4, 2), data, data, output_dir=tmp_path, overwrite=True, **options)["status"] == "completed"
    assert (tmp_path / "train.log.1").is_file()
