"""Reading checkpoints back: real files in tmp_path, real modules and optimizers."""

import pytest
import torch

from flint.handlers.checkpoint_io import CheckpointError, read_state, restore


def test_read_state_names_a_truncated_file_and_calls_it_corrupt(tmp_path):
    path = tmp_path / "checkpoint_4.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"cannot load checkpoint {path}") as error:
        read_state(path)
    assert error.value.corrupt


def test_read_state_of_a_missing_file_is_not_corrupt(tmp_path):
    with pytest.raises(CheckpointError) as error:
        read_state(tmp_path / "nothing.pt")
    assert not error.value.corrupt  # an I/O error: the file is not set aside


def test_restore_loads_every_object_and_names_a_missing_one(tmp_path):
    saved, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    restore({"model": model}, {"model": saved.state_dict()}, "c.pt")
    assert torch.equal(model.weight, saved.weight)
    with pytest.raises(CheckpointError, match="checkpoint c.pt lacks optimizer"):
        restore({"model": model, "optimizer": torch.optim.SGD(model.parameters())}, {"model": saved.state_dict()}, "c.pt")


def test_restore_refuses_another_optimizers_state_naming_both():
    model = torch.nn.Linear(2, 2)
    adam = torch.optim.Adam(model.parameters()).state_dict()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match="its optimizer was saved by another optimizer than SGD .*betas.*momentum"):
        restore({"optimizer": sgd}, {"optimizer": adam}, "c.pt")


def test_restore_names_an_object_that_does_not_fit():
    with pytest.raises(CheckpointError, match=r"checkpoint c.pt: its model does not fit this run's \(RuntimeError: "):
        restore({"model": torch.nn.Linear(3, 2)}, {"model": torch.nn.Linear(2, 2).state_dict()}, "c.pt")
