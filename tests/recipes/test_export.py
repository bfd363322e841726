"""flint export: every format gives the trained model's outputs back."""

import json

import numpy as np
import onnxruntime
import pytest
import torch

from recipes import RECIPES
from recipes.cli import main


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


@pytest.mark.parametrize("recipe", ["lenet", "ffnn"])
def test_onnx_gives_the_same_outputs_under_onnxruntime_for_any_batch_size(runs, recipe, capsys):
    assert main(["export", str(runs / recipe), "--format", "onnx"]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(runs / recipe / "model.onnx")
    _, x, expected = trained(runs / recipe)
    session = onnxruntime.InferenceSession(path)
    (out,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_torchscript_and_state_dict_from_a_checkpoint_file(runs, tmp_path):
    model, x, expected = trained(runs / "lenet")
    checkpoint = next((runs / "lenet" / "checkpoints").glob("checkpoint_*.pt"))
    assert main(["export", str(checkpoint), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    with pytest.warns(FutureWarning):  # torch.jit.load is deprecated
        scripted = torch.jit.load(str(tmp_path / "m.pt"))
    torch.testing.assert_close(scripted(x), expected)
    assert main(["export", str(runs / "lenet"), "--format", "state_dict", "-o", str(tmp_path / "w.pt")]) == 0
    fresh = RECIPES["lenet"].build_model().eval()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    torch.testing.assert_close(fresh(x), expected)


def test_bad_export_paths_are_one_line_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "--format", "onnx"]) == 2
    assert capsys.readouterr().err == f"flint: error: export: {tmp_path / 'nothing'} is neither a run directory nor a checkpoint file\n"
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
