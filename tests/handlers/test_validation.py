import pytest
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy

import torch

from flint.engine import create_evaluator, create_trainer
from flint.handlers import Validation


def test_runs_the_evaluator_every_n_epochs_and_after_the_last(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    evaluator = create_evaluator(model, {"accuracy": Accuracy()})
    results = []
    evaluator.add_event_handler(Events.COMPLETED, lambda e: results.append((trainer.state.epoch, e.state.metrics["accuracy"])))
    validation = Validation(evaluator, batches, every=3).attach(trainer)
    trainer.run(batches, max_epochs=7)
    assert validation.epochs == [3, 6, 7] == [epoch for epoch, _ in results]


def test_epoch_length_limits_the_batches(batches):
    evaluator = Engine(lambda e, b: None)
    seen = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    trainer = Engine(lambda e, b: None)
    Validation(evaluator, batches, epoch_length=1).attach(trainer)
    trainer.run([0], max_epochs=3)
    assert seen == [1, 1, 1]


def test_rejects_bad_interval():
    with pytest.raises(ValueError, match="every should be a positive integer, got 0"):
        Validation(Engine(lambda e, b: None), [], every=0)
