"""init_from: a new run starts from another run's weights with a fresh optimizer and schedule; weights that do not fit are refused, named."""

from __future__ import annotations

import json

import torch
from ignite.engine import Events

import flint
from flint.recipes import fit
from flint.recipes.app.cli import main
from flint.recipes.app.init_from import weight_mismatches
from flint.recipes.app.rundir import RunDir
from tests.recipes.app.test_fit import OPTIONS, Net, fresh_net, made_up, records
from tests.recipes.app.tiny import tiny_recipe


class AtStart:
    """What the trainer starts from: the model's outputs on the validation set (its first evaluation) and the optimizer's state."""

    def __init__(self, model: torch.nn.Module, val: torch.utils.data.Dataset, optimizers: list) -> None:
        self.model, self.val, self.optimizers = model, val, optimizers

    def attach(self, trainer) -> None:
        trainer.add_event_handler(Events.STARTED, self.look)

    def look(self, trainer) -> None:
        self.outputs = flint.predict(self.model, self.val)
        self.optimizer_state = dict(self.optimizers[-1].state)
        self.iteration = trainer.state.iteration


def test_init_from_starts_from_the_source_weights_with_a_fresh_optimizer_and_schedule(tmp_path):
    train, val = made_up()
    options = {**OPTIONS, "lr_mode": "cosine", "verbose": False}
    fit(fresh_net(), train, val, output_dir=tmp_path / "source", optimizer="sgd", **options)
    best = RunDir(tmp_path / "source").best_checkpoint()
    saved = torch.load(best, weights_only=True)
    assert saved["optimizer"]["state"]  # momentum buffers: what a fine-tuned run must not take

    optimizers: list = []

    def sgd(groups: list) -> torch.optim.Optimizer:
        optimizers.append(torch.optim.SGD(groups, lr=0.01, momentum=0.9))
        return optimizers[-1]

    torch.manual_seed(1)
    model = Net()  # other weights: init_from replaces them
    start = AtStart(model, val, optimizers)
    fit(model, train, val, output_dir=tmp_path / "tuned", optimizer=sgd, handlers=[start], init_from=str(tmp_path / "source"), **options)
    source_model = Net()
    source_model.load_state_dict(saved["model"])
    assert torch.equal(start.outputs, flint.predict(source_model, val))  # its first evaluation is the source checkpoint's
    assert start.optimizer_state == {} and start.iteration == 0
    first_lr = next(r for r in records(tmp_path / "tuned") if r["phase"] == "lr")
    assert (first_lr["epoch"], first_lr["lr"]) == (1, [0.01, 0.01])  # the cosine schedule starts again from the top
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["init_from"] == str(tmp_path / "source")


def test_weights_that_do_not_fit_are_refused_naming_each_key_and_nothing_is_written(tmp_path, capsys):
    recipe, source = tiny_recipe(tmp_path), tmp_path / "source"
    assert main(["run", recipe, "--epochs", "1", "--no-progress", "-o", str(source)]) == 0
    capsys.readouterr()
    assert main(["run", f"{recipe}:WIDER", "--init-from", str(source), "--no-progress", "-o", str(tmp_path / "wider")]) == 2
    best = RunDir(source).best_checkpoint()
    assert capsys.readouterr().err.strip() == (f"flint: error: --init-from {source}: the weights of {best} do not fit the model: "
                                               "mis-shaped weight (3x4 in the checkpoint, 5x4 in the model), bias (3 in the checkpoint, 5 in the model)")  # fmt: skip
    assert not (tmp_path / "wider").exists()


def test_mismatches_are_named_by_kind_the_first_five_of_each():
    model = {f"layer{i}.weight": (2, 2) for i in range(8)}
    saved = {"layer0.weight": (2, 3), "extra.bias": (4,)}
    assert weight_mismatches(model, saved) == [
        "missing layer1.weight, layer2.weight, layer3.weight, layer4.weight, layer5.weight and 2 more",
        "mis-shaped layer0.weight (2x3 in the checkpoint, 2x2 in the model)",
        "unexpected extra.bias",
    ]
    assert weight_mismatches(model, model) == []
