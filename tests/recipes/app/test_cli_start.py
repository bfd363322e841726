"""`flint --help`, `flint list` and every bad option answer before torch is imported."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    "args,status",
    [
        (["--help"], 0),
        (["run", "--help"], 0),
        (["resume", "--help"], 0),
        (["list"], 0),
        (["--version"], 0),
        (["run", "lenet", "--help"], 0),
        (["run", "lenet", "--lr", "inf"], 2),
        (["run", "lenet", "--optimizer", "adam", "--momentum", "0.5"], 2),
        (["run", "lenet", "--epochs", "3", "--interrupt-at", "3"], 2),
        (["run", "nosuchrecipe"], 2),
        (["run", "lenet", "--frob"], 2),
        (["evaluate"], 2),
    ],
)
def test_no_torch_is_imported(tmp_path, args, status):
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run([sys.executable, "-m", "flint", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == status, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "flint" in imported  # the profile is there
    assert not imported & {"torch", "torchvision", "ignite", "numpy", "matplotlib", "sklearn", "tensorboardX"}, sorted(imported)
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_run_imports_only_what_it_uses(tmp_path):
    # lenet on the embedded digits: no torchvision (MNIST, ResNet), matplotlib (report), onnx (export).
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    args = ["run", "lenet", "--epochs", "1", "--test-run", "--no-progress", "-o", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-m", "flint", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert {"torch", "ignite", "sklearn", "tensorboardX"} <= imported
    unused = {"torchvision", "matplotlib", "onnx", "onnxscript", "mlflow"}
    assert not imported & unused, sorted(imported & unused)
