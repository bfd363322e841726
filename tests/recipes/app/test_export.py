"""flint export: every format gives the trained model's outputs back, with its metadata; bad files are one line."""

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from flint.handlers.checkpoint_io import read_state
from flint.recipes import RECIPES
from flint.recipes.app.cli import main
from flint.recipes.app.export import METADATA_FILE
from flint.recipes.app.rundir import RunDir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One short trained run per recipe (in-process through the CLI), shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    for recipe in ("lenet", "ffnn"):
        status = main(["run", recipe, "--dataset", "fake", "--test-run", "--epochs", "1", "--no-progress", "-o", str(root / recipe)])
        assert status == 0
    return root


def trained(run_dir):
    recipe = RECIPES[json.loads((run_dir / "config.json").read_text())["recipe"]]
    (best,) = (run_dir / "checkpoints").glob("best_checkpoint_*.pt")
    model = recipe.build_model()
    model.load_state_dict(torch.load(best, weights_only=True)["model"])
    x = torch.randn(5, *recipe.input_shape)
    with torch.no_grad():
        return model.eval(), x, model(x)


def check_metadata(meta, run_dir, recipe):
    config = json.loads((run_dir / "config.json").read_text())
    assert meta["config"] == config and meta["recipe"] == recipe and meta["dataset"] == "fake"
    assert meta["input_shape"] == list(RECIPES[recipe].input_shape)
    assert meta["checkpoint"].startswith("best_checkpoint_1_")
    if recipe == "lenet":
        assert meta["task"] == "multiclass" and meta["output"].startswith("logits")
        assert "FakeData" in meta["preprocessing"] and meta["mean"] is None and meta["classes"] is None
    else:
        assert meta["task"] == "regression" and meta["classes"] is None


@pytest.mark.parametrize("recipe", ["lenet", "ffnn"])
def test_onnx_gives_the_same_outputs_under_onnxruntime_and_carries_the_metadata(runs, recipe, capsys):
    assert main(["export", str(runs / recipe), "--format", "onnx"]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(runs / recipe / "model.onnx")
    _, x, expected = trained(runs / recipe)
    session = onnxruntime.InferenceSession(path)
    (out,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-5)
    meta = {p.key: json.loads(p.value) for p in onnx.load(path).metadata_props}
    check_metadata(meta, runs / recipe, recipe)
    assert json.loads(session.get_modelmeta().custom_metadata_map["recipe"]) == recipe


def test_torchscript_and_state_dict_from_a_checkpoint_file_with_metadata(runs, tmp_path):
    model, x, expected = trained(runs / "lenet")
    checkpoint = next((runs / "lenet" / "checkpoints").glob("checkpoint_*.pt"))
    assert main(["export", str(checkpoint), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    extra = {METADATA_FILE: ""}
    with pytest.warns(FutureWarning):  # torch.jit.load is deprecated
        scripted = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    torch.testing.assert_close(scripted(x), expected)
    meta = json.loads(extra[METADATA_FILE])
    assert meta["checkpoint"] == checkpoint.name and meta["config"]["recipe"] == "lenet"
    assert main(["export", str(runs / "lenet"), "--format", "state_dict", "-o", str(tmp_path / "w.pt")]) == 0
    fresh = RECIPES["lenet"].build_model().eval()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    torch.testing.assert_close(fresh(x), expected)
    check_metadata(json.loads((tmp_path / "w.json").read_text()), runs / "lenet", "lenet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "w.json", "w.pt"]  # no temp file left


def test_the_metadata_of_real_datasets_has_their_normalisation_and_class_names(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "lenet", run)
    config = json.loads((run / "config.json").read_text())
    for dataset, mean, classes in [("digits", 0.3056, "0"), ("fashion-mnist", 0.2860, "T-shirt/top")]:
        (run / "config.json").write_text(json.dumps({**config, "dataset": dataset}))
        assert main(["export", str(run), "--format", "state_dict"]) == 0
        meta = json.loads((run / "model.state_dict.json").read_text())
        assert meta["mean"][0] == pytest.approx(mean, abs=1e-4) and meta["classes"][0] == classes and len(meta["classes"]) == 10


def make_best(run, name, state, shift, score=None):
    """A best checkpoint: the run's own, with every weight moved by ``shift`` (to tell which was exported)."""
    copy = {**state, "model": {k: v + shift if v.is_floating_point() else v for k, v in state["model"].items()}}
    if score is not None:
        copy["best_score"] = score
    torch.save(copy, run / "checkpoints" / name)


@pytest.fixture
def best_run(runs, tmp_path):
    """A copy of the lenet run whose best checkpoints are replaced by the test's own."""
    run = tmp_path / "run"
    shutil.copytree(runs / "lenet", run)
    (original,) = (run / "checkpoints").glob("best_checkpoint_*.pt")
    state = read_state(original)  # without its checksum: the tests' copies change the content
    original.unlink()
    return run, state


def exported_shift(run, state):
    weights = torch.load(run / "model.state_dict.pt", weights_only=True)
    return round(float(weights["conv1.0.weight"].flatten()[0] - state["model"]["conv1.0.weight"].flatten()[0]), 3)


def test_the_best_checkpoint_is_chosen_by_its_value_not_its_name(best_run):
    run, state = best_run
    make_best(run, "best_checkpoint_9_accuracy=0.9500.pt", state, 9.0)
    make_best(run, "best_checkpoint_10_accuracy=0.9900.pt", state, 10.0)  # sorts before epoch 9 by name
    assert main(["export", str(run), "--format", "state_dict"]) == 0
    assert exported_shift(run, state) == 10.0
    for f in (run / "checkpoints").glob("best_*"):
        f.unlink()
    make_best(run, "best_checkpoint_9_loss=0.5000.pt", state, 9.0)
    make_best(run, "best_checkpoint_10_loss=0.9000.pt", state, 10.0)
    assert main(["export", str(run), "--format", "state_dict"]) == 0
    assert exported_shift(run, state) == 9.0  # the lower loss
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "monitor": "loss:max"}))  # config.json's monitor decides
    assert main(["export", str(run), "--format", "state_dict"]) == 0
    assert exported_shift(run, state) == 10.0


def test_a_best_checkpoint_without_a_score_in_its_name_is_ranked_by_its_saved_best_score(best_run):
    run, state = best_run
    make_best(run, "best_checkpoint_9_accuracy=0.9500.pt", state, 9.0)
    make_best(run, "best_checkpoint_renamed.pt", state, 3.0, score={"mode": "max", "value": 0.97, "epoch": 3})
    assert RunDir(run).best_checkpoint().name == "best_checkpoint_renamed.pt"
    make_best(run, "best_checkpoint_4_mine=0.2000.pt", state, 4.0, score={"mode": "min", "value": 0.2, "epoch": 4})
    make_best(run, "best_checkpoint_5_mine=0.1000.pt", state, 5.0, score={"mode": "min", "value": 0.1, "epoch": 5})
    for f in (run / "checkpoints").glob("best_checkpoint_[9r]*"):
        f.unlink()
    assert RunDir(run).best_checkpoint().name == "best_checkpoint_5_mine=0.1000.pt"  # an unknown metric: the saved mode


class Unsafe:
    """Not a tensor or plain value: torch's weights-only loader refuses it."""


def bad_checkpoints(run, state):
    """path -> (content writer, exit status, message after 'flint: error: ')."""
    folder = run / "checkpoints"
    good = next(folder.glob("checkpoint_*.pt")).read_bytes()
    cases = {
        "truncated.pt": (lambda p: p.write_bytes(good[:1000]), 1, "checkpoint {p} is truncated or corrupt: its data ends early or is damaged (1000 bytes)"),
        "empty.pt": (lambda p: p.write_bytes(b""), 1, "checkpoint {p} is empty (0 bytes)"),
        "text.pt": (lambda p: p.write_text("hello"), 2, "{p} is not a PyTorch checkpoint: it is neither a zip archive nor a pickle"),
        "list.pt": (lambda p: torch.save([1, 2], p), 1, "checkpoint {p} is not a Flint checkpoint: it holds a list, not a dict"),
        "weights.pt": (lambda p: torch.save(state["model"], p), 2, "{p} is not a Flint checkpoint: it holds bare weights (a state_dict), not a 'model' entry"),
        "unsafe.pt": (
            lambda p: torch.save({"model": state["model"], "extra": Unsafe()}, p), 1,
            f"checkpoint {{p}} holds a pickled {Unsafe.__module__}.Unsafe object, not only tensors and plain values: it is not a Flint checkpoint and is unsafe to load",
        ),
        "plain_pickle.pt": (
            lambda p: p.write_bytes(pickle.dumps({"model": {}})), 1,
            "checkpoint {p} is corrupt or not a PyTorch checkpoint: its pickle data does not read as tensors and values",
        ),
        "other_model.pt": (
            lambda p: torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, p), 1,
            "checkpoint {p} does not fit recipe lenet's model: missing conv1.0.weight, conv1.0.bias, conv2.0.weight and 15 more; unexpected fc.weight",
        ),
    }  # fmt: skip
    return {folder / name: case for name, case in cases.items()}


def test_bad_checkpoint_files_are_one_line_naming_the_file(best_run, capsys):
    run, state = best_run
    for path, (write, status, message) in bad_checkpoints(run, state).items():
        write(path)
        assert main(["export", str(path), "--format", "onnx"]) == status, path.name
        err = capsys.readouterr().err
        assert err == f"flint: error: {message.format(p=path)}\n"
        assert "weights_only=False" not in err and "weights_only` set to `False" not in err


def test_a_run_whose_best_checkpoint_is_damaged_names_it_and_exits_1(best_run, flint):
    run, state = best_run
    best = run / "checkpoints" / "best_checkpoint_1_accuracy=0.5000.pt"
    best.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    result = flint("export", str(run), "--format", "state_dict")
    assert result.returncode == 1
    assert result.stderr == f"flint: error: checkpoint {best} is truncated or corrupt: its data ends early or is damaged (104 bytes)\n"


def test_onnx_export_prints_only_the_path(runs, tmp_path, flint):
    target = tmp_path / "quiet.onnx"
    result = flint("export", str(runs / "ffnn"), "--format", "onnx", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == (f"{target}\n", "")
    debug = flint("export", str(runs / "ffnn"), "--format", "onnx", "-o", str(target), "--debug")
    assert debug.returncode == 0 and debug.stdout == f"{target}\n" and "Exported " in debug.stderr


def test_bad_export_paths_are_one_line_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "--format", "onnx"]) == 2
    assert capsys.readouterr().err == f"flint: error: {tmp_path / 'nothing'} is neither a run directory nor a checkpoint file\n"
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_an_export_to_a_place_that_cannot_be_written_names_the_file(runs, capsys):
    target = Path("/proc/nope.pt")
    assert main(["export", str(runs / "lenet"), "--format", "state_dict", "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"flint: error: cannot write exported model {target}: ") and "enforce fail" not in err, err
