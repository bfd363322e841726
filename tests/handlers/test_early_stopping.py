"""EarlyStopping: Ignite's decisions on a real trainer and evaluator; a NaN score is no improvement."""

import math

import pytest
from ignite.engine import Engine, Events

from flint.handlers import EarlyStopping


def run(scores, patience, mode="max"):
    values = iter(scores)
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(score=next(values)))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    stop = EarlyStopping(patience, "score", trainer, mode=mode).attach(trainer, evaluator)
    trainer.run([0], max_epochs=len(scores))
    return trainer.state.epoch, stop


@pytest.mark.parametrize("mode,scores", [("max", [0.5, math.nan, math.nan, 0.9]), ("min", [0.5, math.nan, math.nan, 0.1])])
def test_nan_scores_do_not_count_as_improvements(mode, scores):
    epochs, stop = run(scores, patience=2, mode=mode)
    assert epochs == 3 and stop.stopped and stop.best_score == 0.5


def test_a_nan_first_score_is_beaten_by_any_number():
    epochs, stop = run([math.nan, 0.2, 0.3, 0.3, 0.3], patience=2)
    assert epochs == 5 and stop.stopped and stop.best_score == 0.3
