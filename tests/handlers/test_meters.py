import math

import pytest

from flint.handlers import BestScore, Throughput, average_excluding_first


def test_throughput_is_averaged_over_the_whole_window():
    meter = Throughput()
    meter.start(samples=100, now=0.0)
    # 10 batches of 64 in 4 s, whatever each batch took.
    assert meter.rate(samples=740, now=4.0) == 160.0


def test_throughput_without_a_start_or_elapsed_time_is_nan():
    meter = Throughput()
    assert math.isnan(meter.rate(10, 1.0))
    assert math.isnan(meter.rate(20, 1.0))


@pytest.mark.parametrize(
    "times,expected", [([], None), ([5.0], 5.0), ([10.0, 1.0], 1.0), ([10.0, 1.0, 2.0, 3.0], 2.0)]
)
def test_average_excluding_first(times, expected):
    assert average_excluding_first(times) == expected


def test_best_score_min_mode_and_ties():
    best = BestScore("min")
    assert best.update(0.5, 1) and not best.update(0.5, 2) and best.update(0.4, 3)
    assert (best.value, best.epoch) == (0.4, 3)


def test_best_score_ignores_nan_and_round_trips():
    best = BestScore("max")
    assert not best.update(math.nan, 1)
    best.update(0.7, 2)
    restored = BestScore()
    restored.load_state_dict(best.state_dict())
    assert (restored.value, restored.epoch, restored.is_better(0.69)) == (0.7, 2, False)


def test_best_score_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode should be 'max' or 'min', got 'best'"):
        BestScore("best")
