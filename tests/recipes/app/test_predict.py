"""Predictions: `flint predict` agrees with `flint evaluate`; `flint.predict` gives a model's outputs; each task's table;
a recipe's classes and normalization reach export's metadata, predict's class names and the report."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import flint
from flint.recipes.app.cli import main
from flint.recipes.app.predict import output_kind, prediction_table
from flint.recipes.app.runs import open_run
from tests.recipes.app.tiny import tiny_recipe


def test_predict_agrees_with_evaluate_and_the_recipes_metadata_reaches_export_predict_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", tiny_recipe(tmp_path), "--no-progress", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert main(["predict", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "predictions.csv")

    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert list(rows[0]) == ["index", "target", "prediction", "target_class", "predicted_class", "p_low", "p_mid", "p_high"]
    assert [int(r["index"]) for r in rows] == list(range(60))
    accuracy = sum(r["target"] == r["prediction"] for r in rows) / len(rows)
    assert accuracy == evaluated["accuracy"] and 0.5 < accuracy < 1.0  # the same checkpoint and batches: the same numbers
    assert all(r["predicted_class"] == ["low", "mid", "high"][int(r["prediction"])] for r in rows)

    run = open_run(out)
    outputs = flint.predict(out, run.recipe.datasets["made-up"](run.config)[1])  # the run's model, from the same checkpoint
    assert outputs.shape == (60, 3) and outputs.argmax(1).tolist() == [int(r["prediction"]) for r in rows]
    assert [float(r["p_mid"]) for r in rows] == pytest.approx(outputs.softmax(1)[:, 1].tolist(), rel=1e-5)

    assert main(["export", str(out), "--format", "state_dict"]) == 0
    metadata = json.loads((out / "model.state_dict.json").read_text())
    assert (metadata["classes"], metadata["mean"], metadata["std"]) == (["low", "mid", "high"], [0.0], [1.0])
    assert json.loads((out / "config.json").read_text())["metadata"]["classes"] == ["low", "mid", "high"]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "classes                   3: low, mid, high" in capsys.readouterr().out


def test_predict_of_a_model_is_its_outputs_in_order_and_leaves_its_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    x = torch.randn(10, 4)
    outputs = flint.predict(model, x, batch_size=3)
    assert model.training  # given back in its mode
    model.eval()
    assert torch.allclose(outputs, model(x)) and torch.equal(flint.predict(model, torch.utils.data.TensorDataset(x, x)), outputs)
    with pytest.raises(ValueError, match="Argument batch_size should be a positive integer, got 0"):
        flint.predict(model, x, batch_size=0)


def test_each_task_turns_outputs_into_its_own_columns():
    logits = torch.tensor([[2.0, -1.0], [-3.0, 0.5]])
    binary = prediction_table("binary", logits[:, :1], torch.tensor([1.0, 0.0]), ["no", "yes"])
    assert binary == [["index", "target", "prediction", "target_class", "predicted_class", "score"],
                      [0, 1, 1, "yes", "yes", "0.880797"], [1, 0, 0, "no", "no", "0.0474259"]]  # fmt: skip
    multilabel = prediction_table("multilabel", logits, torch.tensor([[1, 1], [0, 1]]))
    assert multilabel == [["index", "target", "prediction", "p_0", "p_1"], [0, "0 1", "0", "0.880797", "0.268941"],
                          [1, "1", "1", "0.0474259", "0.622459"]]  # fmt: skip
    regression = prediction_table("regression", torch.tensor([[0.25], [1.5]]), torch.tensor([[0.5], [1.5]]))
    assert regression == [["index", "target", "prediction"], [0, "0.5", "0.25"], [1, "1.5", "1.5"]]
    unnamed = prediction_table("classification", logits, torch.tensor([0, 0]), ["only one name"])  # names that do not fit: indices
    assert unnamed[0] == ["index", "target", "prediction", "p_0", "p_1"] and [r[2] for r in unnamed[1:]] == [0, 1]
    with pytest.raises(ValueError, match="Argument task should be one of classification, multiclass, binary, multilabel, regression, got 'ranking'"):
        output_kind("ranking")
