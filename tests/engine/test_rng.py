import io
import random

import numpy as np
import pytest
import torch

from flint.engine import RNGState, seed_everything


def draw() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)], np.random.randn()


def test_rng_state_restores_every_generator_through_a_weights_only_file():
    seed_everything(7)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    buffer = io.BytesIO()
    torch.save(RNGState().state_dict(), buffer)
    expected = draw()
    draw()  # move every generator on
    buffer.seek(0)
    RNGState().load_state_dict(torch.load(buffer, weights_only=True))
    assert draw() == expected


def test_rng_state_loads_python_state_saved_as_a_list_by_earlier_versions():
    seed_everything(5)
    state = RNGState().state_dict()
    state["python"]["internal"] = list(random.getstate()[1])  # the form checkpoints had before
    expected = draw()
    draw()
    RNGState().load_state_dict(state)
    assert draw() == expected


def test_seed_everything_makes_draws_repeatable():
    seed_everything(3)
    first = draw()
    seed_everything(3)
    assert draw() == first
    seed_everything(4)
    assert draw() != first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rng_state_loads_from_a_checkpoint_mapped_to_the_gpu():
    buffer = io.BytesIO()
    torch.save(RNGState().state_dict(), buffer)
    expected = draw()
    buffer.seek(0)
    RNGState().load_state_dict(torch.load(buffer, map_location="cuda", weights_only=True))
    assert draw() == expected
