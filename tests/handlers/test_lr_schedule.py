import math
from functools import partial

import pytest
import torch
from ignite.engine import Engine

from flint.handlers import LRSchedule, lr_multiplier


def multipliers(n: int, **kwargs) -> list[float]:
    return [lr_multiplier(step, **kwargs) for step in range(n)]


def test_warmup_rises_linearly_from_the_start_value():
    values = multipliers(6, mode="constant", steps_per_epoch=2, epochs=5, warmup_epochs=2, warmup_start=0.2)
    assert values == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_step_decays_after_each_milestone_epoch():
    values = multipliers(8, mode="step", steps_per_epoch=2, epochs=4, milestones=[2, 3], factor=0.5)
    assert values == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_cosine_and_poly_decay_to_zero_at_the_end():
    cosine = multipliers(11, mode="cosine", steps_per_epoch=10, epochs=1)
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5) and cosine[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))
    poly = multipliers(11, mode="poly", steps_per_epoch=10, epochs=1, power=2.0)
    assert poly[5] == pytest.approx(0.25) and poly[10] == 0.0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode should be one of constant, step, cosine, poly, got 'linear'"):
        lr_multiplier(0, mode="linear", steps_per_epoch=1, epochs=1)


def make(groups_lr=(1.0, 0.1)):
    params = [torch.zeros(1, requires_grad=True) for _ in groups_lr]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, groups_lr)])
    schedule = LRSchedule(opt, partial(lr_multiplier, mode="cosine", steps_per_epoch=4, epochs=2, warmup_epochs=1))
    return opt, schedule


def test_each_group_keeps_its_own_ratio_every_iteration():
    opt, schedule = make()
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]  # set before the first step
    seen = []
    engine = Engine(lambda e, b: seen.append([g["lr"] for g in opt.param_groups]))
    schedule.attach(engine)
    engine.run([0] * 4, max_epochs=2)
    assert [s[0] for s in seen] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 0.8535534, 0.5, 0.1464466])
    assert all(s[1] == pytest.approx(s[0] / 10) for s in seen)


def test_state_dict_resumes_the_schedule_where_it_stopped():
    opt, schedule = make()
    engine = Engine(lambda e, b: None)
    schedule.attach(engine)
    engine.run([0] * 4, max_epochs=1)
    saved = schedule.state_dict()
    opt2, resumed = make()
    resumed.load_state_dict(saved)
    resumed(None)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1.0) and resumed.event_index == 5
    assert math.isclose(opt2.param_groups[1]["lr"], 0.1)
