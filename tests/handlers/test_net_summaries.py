import pytest
import torch
from ignite.engine import Engine, Events

from flint.engine import TrainEvents, create_trainer
from flint.handlers import NetSummaries, TensorBoardWriter
from tests.handlers.test_tensorboard_writer import read_events


class HistogramLog:
    """Stands in for the writer: keeps a copy of what each add_histogram call was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, torch.Tensor, int]] = []

    def add_histogram(self, tag, values, step, bins):
        self.calls.append((tag, values.clone(), step))
        self.bins = bins


def test_grads_are_the_last_update_of_each_epoch_and_weights_the_epoch_end(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy, accumulation_steps=3)
    expected_grads = {}

    @trainer.on(TrainEvents.BEFORE_OPTIMIZER_STEP)
    def keep(engine):
        expected_grads[engine.state.epoch] = {n: p.grad.clone() for n, p in model.named_parameters()}

    log = HistogramLog()
    NetSummaries(model, log).attach(trainer)
    trainer.run(batches, max_epochs=2)

    names = [n for n, _ in model.named_parameters()]
    grads = [(tag, v, step) for tag, v, step in log.calls if tag.startswith("grads/")]
    weights = [(tag, v, step) for tag, v, step in log.calls if tag.startswith("weights/")]
    assert [tag for tag, _, _ in grads] == [f"grads/{n}" for n in names] * 2
    assert [step for _, _, step in grads] == [26] * len(names) + [52] * len(names)
    for (tag, values, step), epoch in zip(grads, [1] * len(names) + [2] * len(names)):
        assert torch.equal(values, expected_grads[epoch][tag.removeprefix("grads/")])
    assert [step for _, _, step in weights] == [26] * len(names) + [52] * len(names)
    assert torch.equal(weights[-1][1], dict(model.named_parameters())[names[-1]].detach())


def test_on_a_plain_engine_grads_come_from_the_last_iteration(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(engine, batch):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
        opt.step()

    engine = Engine(step)
    log = HistogramLog()
    NetSummaries(model, log).attach(engine)
    engine.run(batches, max_epochs=1)
    assert [step for tag, _, step in log.calls if tag.startswith("grads/")] == [7] * 4  # iterations stand in


def test_writes_real_tensorboard_histograms_of_all_values_in_equal_bins(tmp_path, model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    writer = TensorBoardWriter(tmp_path)
    NetSummaries(model, writer, bins=8).attach(trainer)
    trainer.run(batches, max_epochs=1)
    writer.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    histograms = {v.tag: v.histo for e in read_events(events) for v in e.summary.value if v.HasField("histo")}
    assert {"weights/0.weight", "grads/2.bias"} <= set(histograms)
    weight = model[0].weight.detach()
    histo = histograms["weights/0.weight"]
    assert sum(histo.bucket) == histo.num == weight.numel() and len(histo.bucket) <= 8 + 1  # + TensorBoard's empty left bin
    assert (histo.min, histo.max) == pytest.approx((weight.min().item(), weight.max().item()))


def test_refuses_bad_bins(model):
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match=f"bins should be a positive integer or a binning name, got {bad!r}"):
            NetSummaries(model, HistogramLog(), bins=bad)  # type: ignore[arg-type]


def test_bins_reach_the_writer(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    log = HistogramLog()
    NetSummaries(model, log, bins="tensorflow").attach(trainer)  # tensorboardX's default binning, if wanted
    trainer.run(batches, max_epochs=1)
    assert log.calls and log.bins == "tensorflow"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["everywhere", "one value"])
def test_a_diverged_model_is_skipped_with_a_warning_not_a_crash(model, batches, caplog, bad, where):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    log = HistogramLog()
    NetSummaries(model, log).attach(trainer)

    def diverge(engine):  # after the epoch's last step, so only this tensor is non-finite when the epoch ends
        if where == "everywhere":
            model[0].weight.data.fill_(bad)
        else:
            model[0].weight.data[1, 2] = bad

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=7), diverge)
    trainer.run(batches, max_epochs=1)
    tags = [tag for tag, _, _ in log.calls]
    assert "weights/0.weight" not in tags and "weights/2.weight" in tags
    assert "Not writing weights/0.weight at 26 samples: it holds NaN or Inf" in caplog.text


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op:UserWarning")
def test_a_parameter_without_elements_is_skipped(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 0), torch.nn.Linear(0, 2))  # the second has a bias of 2
    engine = Engine(lambda e, b: None)
    writer = TensorBoardWriter(tmp_path)  # refuses an empty histogram
    NetSummaries(model, writer).attach(engine)
    engine.run([0], max_epochs=1)
    writer.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    assert {v.tag for e in read_events(events) for v in e.summary.value} == {"weights/1.bias"}
