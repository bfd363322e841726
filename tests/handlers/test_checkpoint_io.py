"""Checksums and reading checkpoints back: real files in tmp_path, real modules and optimizers."""

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from flint.engine import RNGState
from flint.handlers import SafeDiskSaver
from flint.handlers.checkpoint_io import CHECKSUM_KEY, CheckpointError, checksum, read_state, restore

DATA = Path(__file__).resolve().parents[1] / "data"


def flip_inside(path: Path, tensor: torch.Tensor, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of ``tensor``'s data in the file at ``path`` (a bit rot torch.load does not notice)."""
    data = bytearray(path.read_bytes())
    start = data.find(tensor.numpy().tobytes())
    assert start > 0 and tensor.numel() * tensor.element_size() >= 2 * count
    for i in range(start + count // 2, start + count // 2 + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def a_state() -> dict:
    """A checkpoint's kinds of content: weights, an optimizer that stepped, an engine, RNG states, plain values."""
    torch.manual_seed(0)
    model = torch.nn.Linear(40, 30)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 40)).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "trainer": Engine(lambda e, b: None).state_dict(),
        "rng": RNGState().state_dict(), "values": (1, 2.5, None, True, "text", [3, {"k": b"raw"}]),
        "odd_tensors": [torch.zeros(0), torch.tensor(7), torch.ones(3, 2, dtype=torch.bfloat16), torch.arange(6.0).view(2, 3).t()],
    }  # fmt: skip


def test_read_state_names_a_truncated_file_and_calls_it_corrupt(tmp_path):
    path = tmp_path / "checkpoint_4.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is truncated or corrupt: its data ends early or is damaged \\(100 bytes\\)") as error:
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


def test_the_checksum_of_a_state_is_that_of_what_torch_load_gives_back(tmp_path):
    state = a_state()
    torch.save(state, tmp_path / "c.pt")
    assert checksum(torch.load(tmp_path / "c.pt", weights_only=True)) == checksum(state)
    assert checksum(state).startswith("sha256:") and len(checksum(state)) == len("sha256:") + 64


def test_the_checksum_tells_values_types_and_nesting_apart():
    states = [{"a": [1, 2]}, {"a": [12]}, {"a": ["1", 2]}, {"a": [1.0, 2]}, {"a": [[1], 2]}, {"b": [1, 2]}, {"a": torch.tensor([1, 2])},
              {"a": torch.tensor([[1, 2]])}, {"a": torch.tensor([1, 2], dtype=torch.int32)}, {"a": torch.tensor([1, 3])}]  # fmt: skip
    assert len({checksum(s) for s in states}) == len(states)
    assert checksum({"a": [1, 2], CHECKSUM_KEY: "anything"}) == checksum({"a": [1, 2]})  # its own key left out


def test_read_state_verifies_the_checksum_and_returns_the_state_without_it(tmp_path):
    state = a_state()
    SafeDiskSaver(tmp_path, add_checksum=True)(state, "checkpoint_3.pt")
    saved = torch.load(tmp_path / "checkpoint_3.pt", weights_only=True)
    assert saved[CHECKSUM_KEY] == checksum(state)
    loaded = read_state(tmp_path / "checkpoint_3.pt")
    assert CHECKSUM_KEY not in loaded and list(loaded) == list(state)
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])


@pytest.mark.parametrize("where", ["model", "optimizer"])
def test_64_flipped_bytes_inside_a_tensor_are_corrupt_for_read_state(tmp_path, where):
    state = a_state()
    path = tmp_path / "checkpoint_3.pt"
    SafeDiskSaver(tmp_path, add_checksum=True)(state, path.name)
    tensor = state["model"]["weight"] if where == "model" else state["optimizer"]["state"][0]["momentum_buffer"]
    flip_inside(path, tensor)
    torch.load(path, weights_only=True)  # torch reads it without a word
    with pytest.raises(CheckpointError) as error:
        read_state(path)
    assert str(error.value) == f"checkpoint {path} is corrupt: its content does not match its checksum"
    assert error.value.corrupt  # set aside on resume, like a truncated file


@pytest.mark.parametrize("commit", ["849c816", "bc273ed"])
def test_a_checkpoint_written_before_checksums_still_loads(commit):
    (path,) = (DATA / f"run_{commit}" / "checkpoints").glob("checkpoint_*.pt")
    state = read_state(path)
    assert CHECKSUM_KEY not in state and "model" in state
