import os

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from flint.handlers import SafeDiskSaver, WriteError
from tests.full_disk import DEV_FULL, needs_dev_full


def test_a_failed_write_keeps_every_older_checkpoint_and_leaves_no_partial_file(tmp_path):
    saver = SafeDiskSaver(tmp_path)
    model = torch.nn.Linear(2, 2)
    saver({"model": model.state_dict()}, "checkpoint_1.pt")
    saver({"model": model.state_dict()}, "checkpoint_2.pt")
    saver.remove("checkpoint_1.pt")  # what Ignite's Checkpoint asks before writing the next one

    class Unpicklable:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        saver({"model": Unpicklable()}, "checkpoint_3.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.pt", "checkpoint_2.pt"]
    torch.load(tmp_path / "checkpoint_1.pt", weights_only=True)

    saver({"model": model.state_dict()}, "checkpoint_3.pt")  # the next good write completes the removal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_2.pt", "checkpoint_3.pt"]


def test_rotation_under_ignite_checkpoint_keeps_n_complete_files(tmp_path):
    model = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.ITERATION_COMPLETED, Checkpoint({"model": model}, SafeDiskSaver(tmp_path), n_saved=2))
    engine.run([0] * 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_5.pt", "model_6.pt"]
    for path in tmp_path.iterdir():
        assert set(torch.load(path, weights_only=True)) == {"weight", "bias"}


def test_ignite_checkpoint_treats_it_as_a_disk_saver_full_paths_and_reloading(tmp_path):
    model = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    checkpoint = Checkpoint({"model": model}, SafeDiskSaver(tmp_path), n_saved=1)
    engine.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)
    engine.run([0] * 3)
    assert checkpoint.last_checkpoint == tmp_path / "model_3.pt"  # a bare file name for a saver that is not a DiskSaver
    fresh = torch.nn.Linear(2, 2)
    checkpoint.reload_objects({"model": fresh}, global_step=3)  # DiskSaver only: dirname / the name
    assert torch.equal(fresh.weight, model.weight)


def test_only_the_saving_rank_writes(tmp_path):
    saver = SafeDiskSaver(tmp_path, save_on_rank=1)  # this process is rank 0
    saver({"x": torch.tensor(1)}, "a.pt")
    saver.remove("a.pt")
    saver.wait()
    assert list(tmp_path.iterdir()) == []


def test_resaving_the_same_name_keeps_the_new_file(tmp_path):
    saver = SafeDiskSaver(tmp_path)
    saver({"x": torch.tensor(1)}, "a.pt")
    saver.remove("a.pt")
    saver({"x": torch.tensor(2)}, "a.pt")
    assert torch.load(tmp_path / "a.pt", weights_only=True)["x"] == 2


def test_accepts_a_directory_that_already_holds_checkpoints(tmp_path):
    (tmp_path / "old.pt").write_bytes(b"")
    SafeDiskSaver(tmp_path)  # Ignite's DiskSaver refuses this by default; resuming needs it
    SafeDiskSaver(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()


WRITER = """
import sys, torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from flint.handlers import SafeDiskSaver

engine = Engine(lambda e, b: None)
payload = torch.arange(2_000_000, dtype=torch.float32)

class Holder:
    def state_dict(self):
        return {"iteration": engine.state.iteration, "payload": payload}

    def load_state_dict(self, state):
        pass

checkpoint = Checkpoint({"holder": Holder()}, SafeDiskSaver(sys.argv[1]), n_saved=2, filename_prefix=sys.argv[2])
engine.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)
engine.run([0] * 10**6)
"""


@pytest.mark.slow  # a kill inside a write, deterministically and through a whole run: tests/recipes/app/test_resilience.py
def test_a_writer_killed_at_random_moments_leaves_only_complete_checkpoints(tmp_path):
    # A process saves 8 MB checkpoints in rotation as fast as it can; each is killed once its
    # writing is seen to be under way (the k-th temp file of the attempt: a different moment each time).
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    payload = torch.arange(2_000_000, dtype=torch.float32)
    killed_mid_write = 0
    for attempt in range(5):
        env = dict(os.environ)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"run{attempt}"], env=env)
        seen: set[str] = set()
        while len(seen) <= attempt:  # poll (no sleep): the temp files of this attempt's writes
            assert proc.poll() is None
            seen.update(p.name for p in tmp_path.glob(f".run{attempt}_*.tmp"))
        proc.kill()
        proc.wait()
        killed_mid_write += any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        for path in tmp_path.glob("*.pt"):  # every visible checkpoint is whole, and holds its own iteration
            state = torch.load(path, weights_only=True)  # a lone object is saved unwrapped
            assert state["iteration"] == int(path.stem.rsplit("_", 1)[1]) and torch.equal(state["payload"], payload)
    assert killed_mid_write >= 2  # the test did exercise kills during writes
    SafeDiskSaver(tmp_path)  # the next run's saver clears what the dead writers left
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    # n_saved=2, plus the new file when a kill lands between its rename and the removal of the oldest
    assert all(len(list(tmp_path.glob(f"run{i}_*.pt"))) <= 3 for i in range(5))


def test_background_sync_completes_in_order_and_wait_makes_the_file_visible(tmp_path):
    saver = SafeDiskSaver(tmp_path, sync_in_background=True)
    model = torch.nn.Linear(2, 2)
    saver({"model": model.state_dict()}, "checkpoint_1.pt")
    saver.remove("checkpoint_1.pt")
    saver({"model": model.state_dict()}, "checkpoint_2.pt")  # waits for checkpoint_1 first
    saver.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_2.pt"]
    assert set(torch.load(tmp_path / "checkpoint_2.pt", weights_only=True)["model"]) == {"weight", "bias"}


def test_a_background_sync_failure_is_raised_by_wait_and_keeps_the_older_file(tmp_path):
    saver = SafeDiskSaver(tmp_path, sync_in_background=True)
    saver({"x": torch.tensor(1)}, "checkpoint_1.pt")
    saver.remove("checkpoint_1.pt")  # Ignite's Checkpoint rotating
    (tmp_path / "checkpoint_2.pt" / "in-the-way").mkdir(parents=True)  # the thread's rename will fail
    saver({"x": torch.tensor(2)}, "checkpoint_2.pt")  # returns once the temp file is written
    with pytest.raises(OSError, match=r"cannot write checkpoint .*checkpoint_2\.pt: (Is a directory|Directory not empty)"):
        saver.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.pt", "checkpoint_2.pt"]  # no temp file left
    assert torch.load(tmp_path / "checkpoint_1.pt", weights_only=True)["x"] == 1  # the older one kept
    saver.wait()  # the error is raised once
    saver({"x": torch.tensor(3)}, "checkpoint_3.pt")  # the next good save makes the removal it owed
    saver.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_2.pt", "checkpoint_3.pt"]


@needs_dev_full
def test_a_full_disk_during_torch_save_says_so_and_keeps_the_older_checkpoint(tmp_path):
    saver = SafeDiskSaver(tmp_path)
    model = torch.nn.Linear(64, 64)  # more than one write buffer: torch.save itself hits the full disk
    saver({"model": model.state_dict()}, "checkpoint_1.pt")
    (tmp_path / f".checkpoint_2.pt.{os.getpid()}.tmp").symlink_to(DEV_FULL)  # the temp file lands on a full disk
    with pytest.raises(WriteError) as raised:
        saver({"model": model.state_dict()}, "checkpoint_2.pt")
    # torch.save raises "[enforce fail at inline_container.cc:...] . unexpected pos"; the OSError behind it is named
    assert str(raised.value) == f"cannot write checkpoint {tmp_path / 'checkpoint_2.pt'}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.pt"]
    assert set(torch.load(tmp_path / "checkpoint_1.pt", weights_only=True)["model"]) == {"weight", "bias"}
