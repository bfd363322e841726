"""flint evaluate and flint export verify a checkpoint's checksum: bytes flipped inside its weights are one line, exit 1."""

import json
import shutil

import torch

from flint.recipes.app.cli import main
from tests.handlers.test_checkpoint_io import flip_inside


def test_64_flipped_bytes_inside_the_best_checkpoints_weights_are_refused_by_evaluate_and_export(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "lenet", "--test-run", "--epochs", "1", "--no-progress", "-o", str(run)]) == 0
    (best,) = (run / "checkpoints").glob("best_checkpoint_*.pt")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0.25
    good = tmp_path / "good.pt"
    shutil.copy(best, good)

    weights = torch.load(best, weights_only=True)["model"]["fc1.0.weight"]
    flip_inside(best, weights)
    assert not torch.equal(torch.load(best, weights_only=True)["model"]["fc1.0.weight"], weights)  # torch reads other weights silently
    line = f"flint: error: checkpoint {best} is corrupt: its content does not match its checksum\n"
    for command in (["evaluate", str(run)], ["export", str(run), "--format", "state_dict"]):
        assert main(command) == 1, command
        assert capsys.readouterr().err == line
    assert not (run / "model.state_dict.pt").exists()

    shutil.copy(good, best)
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0.25
