import torch
from ignite.metrics import Accuracy, Loss

from flint.engine import create_evaluator


def test_evaluator_computes_metrics_in_eval_mode_without_gradients(model, batches):
    modes, grad_modes = [], []

    def record(module, inputs, output):
        modes.append(module.training)
        grad_modes.append(torch.is_grad_enabled())

    model.register_forward_hook(record)
    model.train()
    metrics = {"accuracy": Accuracy(), "loss": Loss(torch.nn.functional.cross_entropy)}
    evaluator = create_evaluator(model, metrics)
    state = evaluator.run(batches)
    assert modes == [False] * len(batches) and grad_modes == [False] * len(batches)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = model(x)
    assert state.metrics["accuracy"] == (logits.argmax(1) == y).sum().item() / len(y)
    assert abs(state.metrics["loss"] - torch.nn.functional.cross_entropy(logits, y).item()) < 1e-6


def test_evaluator_metrics_restart_every_run(model, batches):
    evaluator = create_evaluator(model, {"accuracy": Accuracy()})
    first = evaluator.run(batches).metrics["accuracy"]
    assert evaluator.run(batches).metrics["accuracy"] == first
