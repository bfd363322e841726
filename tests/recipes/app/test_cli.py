"""The real `flint` command in a subprocess: outputs, exit statuses, interrupt and exact resume."""

import json
import sys
from pathlib import Path

import pytest
import torch

from flint.handlers import Checkpointing
from flint.recipes.app.cli import main

TIMING = ("epoch_time", "samples_per_sec", "avg_epoch_time", "wall_time")


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


def test_console_script_lists_the_recipes():
    import subprocess

    script = Path(sys.executable).parent / "flint"
    result = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["lenet", "mlp", "resnet", "ffnn"]
    assert "[dataset: digits; also: mnist, fashion-mnist, fake]" in lines[0] and "[dataset: cifar10; also: fake]" in lines[2]


def test_test_run_writes_every_output(tmp_path, flint):
    out = tmp_path / "run"
    result = flint("run", "lenet", "--test-run", "--epochs", "2", "--log-interval", "1", "-o", str(out))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in (out / "checkpoints").iterdir()}
    best = {n for n in names if n.startswith("best_checkpoint_") and "_accuracy=" in n}
    assert len(best) == 1 and names - best == {"checkpoint_1.pt", "checkpoint_2.pt"}
    assert list(out.glob("events.out.tfevents.*")) and "Run config" in (out / "train.log").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "lenet" and config["dataset"] == "digits" and config["device"] == "auto"  # resolved on each run, not frozen
    assert config["epochs"] == 2 and config["test_run"] is True and config["output_dir"] == str(out)

    recs = records(out)
    assert [r["phase"] for r in recs if r["phase"] != "lr"] == [
        "batch", "training", "validation", "batch", "training", "validation", "summary",
    ]  # fmt: skip
    batch = next(r for r in recs if r["phase"] == "batch")
    assert set(batch) >= {"epoch", "iteration", "samples", "loss", "samples_per_sec", "lr"}
    assert (batch["epoch"], batch["iteration"], batch["samples"]) == (1, 1, 64)
    training = next(r for r in recs if r["phase"] == "training")
    # Two param groups: weights with weight decay, biases and BatchNorm parameters without.
    assert set(training) >= {"epoch", "loss", "accuracy", "epoch_time", "lr"} and training["lr"] == [0.05, 0.05]
    assert set(next(r for r in recs if r["phase"] == "validation")) >= {"epoch", "loss", "accuracy"}
    summary = recs[-1]
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert set(summary) >= {"best_epoch", "best_value", "avg_epoch_time"} and summary["monitor"] == "accuracy:max"


@pytest.mark.parametrize("recipe", ["lenet", "mlp"])
def test_default_run_on_digits_reaches_97_percent(tmp_path, flint, recipe):
    out = tmp_path / "run"
    result = flint("run", recipe, "-o", str(out))
    assert result.returncode == 0, result.stderr
    validation = [r["accuracy"] for r in records(out) if r["phase"] == "validation"]
    assert len(validation) == 10 and validation[-1] >= 0.97
    assert "Completed 10 epochs" in result.stderr and "summary: status=completed" in (out / "train.log").read_text()


@pytest.mark.parametrize("recipe", ["lenet", "mlp", "resnet", "ffnn"])
def test_every_recipe_runs_end_to_end_on_fake_data(tmp_path, flint, recipe):
    out = tmp_path / "run"
    result = flint("run", recipe, "--dataset", "fake", "--test-run", "--epochs", "2", "--batch-size", "4", "-o", str(out))
    assert result.returncode == 0, result.stderr
    recs = records(out)
    metric = "mae" if recipe == "ffnn" else "accuracy"
    assert [r["epoch"] for r in recs if r["phase"] == "validation"] == [1, 2]
    assert all(metric in r and "loss" in r for r in recs if r["phase"] in ("training", "validation"))
    assert recs[-1]["status"] == "completed" and recs[-1]["monitor"] == ("loss:min" if recipe == "ffnn" else "accuracy:max")


def test_ffnn_update_cycle_equals_the_large_batch(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    assert main(["run", "ffnn", "--epochs", "30", "--batch-size", "8", "--update-cycle", "4", "--no-progress", "-o", str(small)]) == 0
    assert main(["run", "ffnn", "--epochs", "30", "--batch-size", "32", "--no-progress", "-o", str(large)]) == 0
    losses = [[r["loss"] for r in records(d) if r["phase"] == "validation"] for d in (small, large)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert losses[1][-1] < losses[1][0] / 10  # it did learn


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["run", "lenet", "--epochs", "0"], ["--epochs 0: must be a positive integer"]),
        (["run", "lenet", "--batch-size", "x"], ["argument --batch-size: 'x' is not an integer"]),
        (["run", "lenet", "--batch-size", "0"], ["--batch-size 0: must be a positive integer"]),
        (["run", "lenet", "--log-interval", "0"], ["--log-interval 0: must be a positive integer"]),
        (["run", "lenet", "--update-cycle", "-2"], ["--update-cycle -2: must be a positive integer"]),
        (["run", "lenet", "--epochs", "3", "--interrupt-at", "7"], ["--interrupt-at 7: must be below --epochs 3"]),
        (["run", "lenet", "--optimizer", "sgdd"], ["--optimizer sgdd: choose from sgd,", "adamw", "radam"]),
        (["run", "lenet", "--optimizer", "lbfgs"], ["--optimizer: lbfgs is not supported: L-BFGS re-evaluates", "adamw"]),
        (["run", "lenet", "--loss", "mse"], ["--loss mse does not fit multiclass; choose from cross-entropy, nll"]),
        (["run", "ffnn", "--loss", "nll"], ["--loss nll does not fit regression; choose from mse, l1, smooth-l1, huber"]),
        (["run", "lenet", "--optimizer", "adam", "--nesterov"], ["--nesterov: adam takes no nesterov (it applies to sgd)"]),
        (["run", "lenet", "--optimizer", "rprop"], ["--optimizer rprop has no weight decay; pass --wd 0"]),
        (["run", "lenet", "--label-smoothing", "1"], ["--label-smoothing 1: must be a finite number >= 0 and < 1"]),
        (["run", "resnet9"], ["unknown recipe 'resnet9': choose from lenet, mlp, resnet, ffnn", "path/to/file.py"]),
        (["run", "lenet", "--lr-mult", "fc2"], ["argument --lr-mult: 'fc2' is not NAME=FACTOR"]),
        (["run", "lenet", "--lr-mult", "head=0.1"], ["--lr-mult head=0.1: no parameter name contains 'head'; names: conv1.0.weight"]),
        (["run", "lenet", "--epochs", "3", "--interrupt-at", "3"], ["--interrupt-at 3: must be below --epochs 3"]),
        (["run", "lenet", "--dataset", "cifar10"], ["--dataset cifar10: lenet takes digits, mnist"]),
        (["run", "lenet", "--resume", "nowhere.pt"], ["--resume nowhere.pt: no such checkpoint file or run directory"]),
        (["fly"], ["invalid choice: 'fly'", "list", "run"]),
        (["run", "lenet", "--lr-mode", "step"], ["--lr-mode step needs --lr-steps: the epochs after which to decay"]),
        (["run", "lenet", "--lr-mode", "cosine", "--lr-steps", "3"], ["--lr-steps applies to --lr-mode step, not cosine"]),
        (["run", "lenet", "--lr-mode", "step", "--lr-steps", "5,3"], ["--lr-steps 5,3: must be increasing positive epochs"]),
        (["run", "lenet", "--lr-mode", "linear"], ["--lr-mode linear: choose from constant, step, cosine, poly"]),
        (["run", "lenet", "--epochs", "2", "--warmup-epochs", "2"], ["--warmup-epochs 2: must be below --epochs 2"]),
    ],
)
def test_bad_usage_is_one_line_and_exit_2_with_nothing_written(tmp_path, capsys, args, fragments):
    # In-process through the CLI's own main(), to spare a torch import per case; one case below runs in a process.
    status = main([*args, "-o", str(tmp_path / "run")] if args[0] == "run" else args)
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("flint: error: ")
    assert all(fragment in err for fragment in fragments), err
    assert not (tmp_path / "run").exists()


def test_bad_usage_exits_2_from_a_real_process(tmp_path, flint):
    result = flint("run", "lenet", "--epochs", "-1", "-o", str(tmp_path / "run"))
    assert result.returncode == 2 and result.stderr == "flint: error: --epochs -1: must be a positive integer up to 1,000,000\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_device_is_bad_usage(tmp_path, capsys):
    assert main(["run", "lenet", "--device", "cuda", "-o", str(tmp_path)]) == 2
    assert "--device cuda: no CUDA device is available here" in capsys.readouterr().err


def test_a_new_run_refuses_a_directory_holding_another(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "lenet", "--test-run", "--epochs", "1", "--no-progress", "-o", str(out)]) == 0
    before = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["run", "lenet", "--test-run", "--epochs", "1", "--no-progress", "-o", str(out)]) == 2
    assert f"output dir {out} already holds a run; pass --resume" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before


def test_a_failure_is_one_line_exit_1_with_the_traceback_in_the_log(tmp_path, flint):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "run"
    result = flint("run", "lenet", "--test-run", "-o", str(out), "--resume", str(bad))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"flint: error: checkpoint {bad} is corrupt or not a PyTorch checkpoint: its pickle data does not read as tensors and values" and "Traceback" not in result.stderr
    assert "Traceback" in (out / "train.log").read_text()
    debug = flint("run", "lenet", "--test-run", "-o", str(tmp_path / "run2"), "--resume", str(bad), "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_update_cycle_lr_mult_and_amp_reach_the_run(tmp_path, flint):
    out = tmp_path / "run"
    args = ("--test-run", "--epochs", "2", "--update-cycle", "2", "--lr-mult", "fc2=0.1", "--amp", "--optimizer", "adam", "--lr-mode", "constant")
    result = flint("run", "lenet", *args, "--lr", "0.01", "-o", str(out))
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["update_cycle"], config["lr_mult"], config["amp"], config["optimizer"]) == (2, {"fc2": 0.1}, True, "adam")
    training = [r for r in records(out) if r["phase"] == "training"]
    assert [r["lr"] for r in training] == [[0.01, 0.01, pytest.approx(0.001), pytest.approx(0.001)]] * 2
    state = torch.load(out / "checkpoints" / "checkpoint_2.pt", weights_only=True)
    assert state["train_progress"]["optimizer_step"] == 2  # one-batch epochs: each flushes its partial cycle
    groups = state["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0, 1e-4, 0.0]


def test_resume_refuses_changed_options_but_takes_more_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "lenet", "--test-run", "--epochs", "3", "--interrupt-at", "1", "--no-progress", "-o", str(out)]) == 3
    config_before = (out / "config.json").read_text()
    capsys.readouterr()
    assert main(["run", "lenet", "--epochs", "3", "--batch-size", "32", "--no-progress", "-o", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size=64, now 32; test_run=True, now False; resume it unchanged" in err
    assert err.endswith(f"or start a new run from its weights with --init-from {out}\n")
    assert (out / "config.json").read_text() == config_before
    assert main(["run", "lenet", "--test-run", "--epochs", "4", "--no-progress", "-o", str(out), "--resume"]) == 0
    assert records(out)[-1]["epochs"] == 4


def test_a_failure_during_the_run_prints_one_error_line(tmp_path, flint):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").write_text("a file where the checkpoint directory should be")
    result = flint("run", "lenet", "--test-run", "--epochs", "1", "-o", str(out))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "rror" in line]
    assert len(errors) == 1 and errors[0].startswith("flint: error: ") and "Not a directory" in errors[0]
    assert records(out)[-1]["status"] == "failed"


def test_early_stopping_stops_saves_and_a_relaunch_does_nothing(tmp_path, flint):
    out = tmp_path / "run"
    result = flint("run", "lenet", "--epochs", "30", "--early-stopping", "1", "-o", str(out))
    assert result.returncode == 0, result.stderr
    recs = records(out)
    accuracy = [r["accuracy"] for r in recs if r["phase"] == "validation"]
    summary = recs[-1]
    assert summary["stopped_early"] is True and summary["epochs"] == len(accuracy) < 30
    assert accuracy[-1] <= max(accuracy[:-1])  # the last validation did not improve: patience 1 ran out
    assert Checkpointing.find_latest(out / "checkpoints").name == f"checkpoint_{23 * summary['epochs']}.pt"
    again = flint("run", "lenet", "--epochs", "30", "--early-stopping", "1", "-o", str(out), "--resume")
    assert again.returncode == 0 and "already stopped early" in again.stderr and records(out) == recs


def test_progress_file_for_schedulers(tmp_path):
    progress = tmp_path / "progress.json"
    args = ["run", "mlp", "--dataset", "fake", "--test-run", "--epochs", "2", "--no-progress"]
    assert main([*args, "--progress-file", str(progress), "-o", str(tmp_path / "run")]) == 0
    state = json.loads(progress.read_text())
    assert (state["status"], state["epoch"], state["epochs"], state["run_eta_s"]) == ("finished", 2, 2, 0.0)
