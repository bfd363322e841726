import torch
from ignite.engine import Events
from ignite.metrics import Accuracy, Average

from flint.engine import create_evaluator, create_trainer
from flint.handlers import EpochMetrics


def test_training_metrics_reset_each_epoch_and_match_a_recount(model, batches, collector):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    correct = {"n": 0, "total": 0}

    def recount(engine):
        if engine.state.iteration % len(batches) == 1:
            correct["n"] = correct["total"] = 0
        out = engine.state.output
        correct["n"] += (out["y_pred"].argmax(1) == out["y"]).sum().item()
        correct["total"] += len(out["y"])

    trainer.add_event_handler(Events.ITERATION_COMPLETED, recount)
    epoch_accuracy = []
    EpochMetrics({"accuracy": Accuracy()}, collector, extra=lambda e: {"custom": 1}).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epoch_accuracy.append(correct["n"] / correct["total"]))
    trainer.run(batches, max_epochs=3)
    records = collector.phase("training")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["accuracy"] for r in records] == epoch_accuracy  # this epoch's batches only
    assert [r["samples"] for r in records] == [26, 52, 78] and all(r["custom"] == 1 for r in records)


def test_validation_records_carry_the_trainers_epoch(model, batches, collector):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    evaluator = create_evaluator(model)
    EpochMetrics({"accuracy": Accuracy()}, collector, "validation", trainer=trainer).attach(evaluator)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run(batches[:2]))
    trainer.run(batches, max_epochs=2)
    assert [(r["phase"], r["epoch"], r["samples"]) for r in collector.records] == [("validation", 1, 26), ("validation", 2, 52)]


def test_non_scalar_metrics_are_left_out(collector):
    from ignite.engine import Engine

    engine = Engine(lambda e, b: torch.tensor([[1.0, 2.0]]))
    EpochMetrics({"vector": Average()}, collector).attach(engine)
    engine.run([0], max_epochs=1)
    assert "vector" not in collector.records[0] and engine.state.metrics["vector"].shape == (2,)
