"""Real datasets through torchvision's own loaders, on small files written in each dataset's format."""

import json
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from flint.recipes.app.cli import main
from tests.conftest import REPO
from flint.recipes.builtin.data import DIGITS_MEAN_STD, DatasetCorrupt, DatasetMissing, dataset_info, digits, torchvision_dataset


def write_idx(path, array: np.ndarray) -> None:
    """An MNIST idx file: magic (0x08 = unsigned byte, then the number of dimensions), sizes, data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root, folder="MNIST", n_train=40, n_test=12):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


def write_cifar10(root, n_per_batch=8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8), "labels": list(range(n_per_batch))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return root


@pytest.fixture
def cifar_files_trusted(monkeypatch):
    # torchvision checks CIFAR-10 files against the real release's MD5 sums; these small files are ours.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda path, md5=None: True)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_formats_load_as_normalised_tensors(tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    train, test = torchvision_dataset(name, str(tmp_path), download=False)
    assert (len(train), len(test)) == (40, 12)
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 3
    raw = torch.tensor(np.asarray(train.data[3]), dtype=torch.float32) / 255
    assert not torch.equal(x[0], raw) and torch.allclose(x[0] * (0.3081 if name == "mnist" else 0.3530), raw - (0.1307 if name == "mnist" else 0.2860), atol=1e-5)


def test_cifar10_python_batches_load_with_augmentation_on_training_only(tmp_path, cifar_files_trusted):
    write_cifar10(tmp_path)
    train, test = torchvision_dataset("cifar10", str(tmp_path), download=False)
    assert (len(train), len(test)) == (40, 8)
    torch.manual_seed(0)
    views = {tuple(train[0][0].flatten()[:64].tolist()) for _ in range(8)}
    assert train[0][0].shape == (3, 32, 32) and len(views) > 1  # random crop and flip
    assert torch.equal(test[0][0], test[0][0]) and test[5][1] == 5


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def _relabel(path, labels):
    write_idx(path, np.asarray(labels))


MNIST_DAMAGE = {
    # damage(raw folder) -> the expected message after "MNIST file(s) <raw>/"
    "truncated images": (
        lambda raw: _truncate(raw / "train-images-idx3-ubyte", 1000),
        "file {raw}/train-images-idx3-ubyte is truncated: 1000 of 31376 bytes",
    ),
    "truncated header": (
        lambda raw: _truncate(raw / "t10k-labels-idx1-ubyte", 5),
        "file {raw}/t10k-labels-idx1-ubyte is truncated: 5 bytes, shorter than its 8-byte header",
    ),
    "empty": (lambda raw: _truncate(raw / "train-labels-idx1-ubyte", 0), "file {raw}/train-labels-idx1-ubyte is truncated: 0 bytes"),
    "not idx": (
        lambda raw: (raw / "train-images-idx3-ubyte").write_bytes(b"<html>404 Not Found</html>" * 2000),
        "file {raw}/train-images-idx3-ubyte is not an idx file of images: it starts with 0x3c68746d, not 0x00000803",
    ),
    "too long": (
        lambda raw: (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes() + b"x" * 7),
        "file {raw}/t10k-images-idx3-ubyte is 7 bytes longer than its header's 9424 bytes",
    ),
    "count mismatch": (
        lambda raw: _relabel(raw / "train-labels-idx1-ubyte", np.arange(39) % 10),
        "files {raw}/train-images-idx3-ubyte and {raw}/train-labels-idx1-ubyte do not match: 40 images, 39 labels",
    ),
    "label out of range": (
        lambda raw: _relabel(raw / "t10k-labels-idx1-ubyte", [0] * 11 + [12]),
        "files in {raw} (t10k) hold label 12; the classes are 0-9",
    ),
    "wrong image size": (
        lambda raw: write_idx(raw / "train-images-idx3-ubyte", np.zeros((40, 32, 32))),
        "file {raw}/train-images-idx3-ubyte holds 32x32 images, not 28x28",
    ),
}


@pytest.mark.parametrize("damage", MNIST_DAMAGE)
@pytest.mark.parametrize("name,folder,title", [("mnist", "MNIST", "MNIST"), ("fashion-mnist", "FashionMNIST", "Fashion-MNIST")])
def test_damaged_mnist_files_fail_at_load_time_naming_the_file(tmp_path, name, folder, title, damage):
    write_mnist(tmp_path, folder)
    raw = tmp_path / folder / "raw"
    change, expected = MNIST_DAMAGE[damage]
    change(raw)
    with pytest.raises(DatasetCorrupt) as e:
        torchvision_dataset(name, str(tmp_path), download=False)
    assert str(e.value).startswith(f"{title} " + expected.format(raw=raw))
    assert "\n" not in str(e.value)


def test_damaged_cifar10_batches_fail_at_load_time_naming_the_file(tmp_path, cifar_files_trusted):
    folder = write_cifar10(tmp_path) / "cifar-10-batches-py"
    _truncate(folder / "data_batch_3", 100)
    with pytest.raises(DatasetCorrupt, match=f"^CIFAR-10 file {folder / 'data_batch_3'} is truncated or not a python batch"):
        torchvision_dataset("cifar10", str(tmp_path), download=False)
    batch = {"data": np.zeros((8, 3072), dtype=np.uint8), "labels": list(range(7))}  # one label short
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetCorrupt, match=f"^CIFAR-10 files in {folder / 'data_batch_3'} do not match: 8 images, 7 labels$"):
        torchvision_dataset("cifar10", str(tmp_path), download=False)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((8, 3072), dtype=np.uint8), "labels": [10] * 8}))
    (folder / "data_batch_3").write_bytes(pickle.dumps({**batch, "labels": list(range(8))}))
    with pytest.raises(DatasetCorrupt, match=f"^CIFAR-10 files in {folder / 'test_batch'} hold label 10; the classes are 0-9$"):
        torchvision_dataset("cifar10", str(tmp_path), download=False)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((8, 3000), dtype=np.uint8), "labels": [1] * 8}))
    with pytest.raises(DatasetCorrupt, match=r"test_batch holds data of shape \(8, 3000\), not \(images, 3072\)$"):
        torchvision_dataset("cifar10", str(tmp_path), download=False)


def test_cifar10_files_that_are_not_the_release_are_named_by_their_md5(tmp_path):
    folder = write_cifar10(tmp_path) / "cifar-10-batches-py"  # without the fixture: torchvision checks MD5 sums
    with pytest.raises(DatasetCorrupt, match=f"^CIFAR-10 file {folder / 'data_batch_1'} is corrupt: its MD5 sum is not"):
        torchvision_dataset("cifar10", str(tmp_path), download=False)


def test_a_damaged_file_through_the_cli_is_one_line_exit_1_before_training(tmp_path, flint):
    data, out = write_mnist(tmp_path / "data"), tmp_path / "run"
    images = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    _truncate(images, 1000)
    result = flint("run", "lenet", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1", "-o", str(out))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"flint: error: MNIST file {images} is truncated: 1000 of 31376 bytes"
    assert not (out / "metrics.jsonl").exists()  # it failed before training


def test_dataset_info_gives_the_normalisation_and_class_names():
    train, _ = digits()
    x = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-5  # digits() standardised the training split
    from sklearn.datasets import load_digits
    import torch.nn.functional as F

    raw = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16
    raw = F.interpolate(raw, size=(28, 28), mode="bilinear", align_corners=False)
    restored = x * DIGITS_MEAN_STD[1] + DIGITS_MEAN_STD[0]  # undoing the published standardisation
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(restored, raw[order[359:]], atol=1e-5, rtol=0)
    info = dataset_info("digits")
    assert (info.mean, info.std, info.classes) == ((DIGITS_MEAN_STD[0],), (DIGITS_MEAN_STD[1],), tuple("0123456789"))
    from torchvision.datasets import FashionMNIST

    assert list(dataset_info("fashion-mnist").classes) == FashionMNIST.classes
    assert dataset_info("cifar10").std == (0.2470, 0.2435, 0.2616) and dataset_info("fake", "regression").classes is None


def test_importing_the_recipes_loads_no_heavy_optional_package():
    code = (
        "import flint.recipes.builtin.resnet, flint.recipes.builtin.data, flint.recipes.app.report, flint.recipes.app.export; import sys; "
        "print(sorted(m for m in ('torchvision', 'matplotlib', 'onnx', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_missing_dataset_names_the_directory_and_the_flag(tmp_path):
    with pytest.raises(DatasetMissing, match=f"dataset mnist not found in {tmp_path}; pass --download"):
        torchvision_dataset("mnist", str(tmp_path), download=False)


def test_lenet_trains_on_mnist_files_through_the_cli(tmp_path, flint):
    data, out = write_mnist(tmp_path / "data"), tmp_path / "run"
    result = flint("run", "lenet", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in recs if r["phase"] == "training"] == [40, 80]


def test_missing_dataset_through_the_cli_is_one_line_exit_1(tmp_path, flint):
    result = flint("run", "lenet", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "-o", str(tmp_path / "run"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"flint: error: dataset mnist not found in {tmp_path / 'none'}; pass --download to fetch it there"


def test_resnet_on_cifar10_files_and_mlp_on_fashion_mnist_with_workers(tmp_path, cifar_files_trusted):
    data = write_cifar10(tmp_path / "data")
    common = ["--data-dir", str(data), "--test-run", "--epochs", "1", "--no-progress"]
    assert main(["run", "resnet", "--dataset", "cifar10", "--batch-size", "4", *common, "-o", str(tmp_path / "r")]) == 0
    write_mnist(data, "FashionMNIST")
    args = ["run", "mlp", "--dataset", "fashion-mnist", "--num-workers", "2", *common, "-o", str(tmp_path / "m")]
    assert main(args) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["dataset"], config["num_workers"], config["data_dir"]) == ("fashion-mnist", 2, str(data))


def test_device_loader_serves_every_sample_once_per_epoch_in_a_seeded_order():
    from torch.utils.data import TensorDataset

    from flint.recipes.builtin.data import DeviceTensorLoader

    data = TensorDataset(torch.arange(10.0).unsqueeze(1), torch.arange(10))
    loader = DeviceTensorLoader(data, batch_size=4, shuffle=True, seed=0)
    first = [y.tolist() for _, y in loader]
    loader.sampler.set_epoch(1)
    second = [y.tolist() for _, y in loader]
    loader.sampler.set_epoch(0)
    torch.rand(3)  # the global generator plays no part
    assert [y.tolist() for _, y in loader] == first  # the same seed and epoch, the same order
    assert [len(b) for b in first] == [4, 4, 2] and sorted(sum(first, [])) == list(range(10)) and first != second
    assert all(torch.equal(x[:, 0].long(), y) for x, y in loader)  # samples stay paired with their labels


def test_random_crop_flip_shifts_within_the_padding_and_mirrors():
    from flint.recipes.builtin.data import random_crop_flip

    torch.manual_seed(0)
    x = torch.arange(32.0).repeat(64, 1, 32, 1)  # each row counts 0..31 left to right
    out = random_crop_flip(x, padding=4)
    first_rows = out[:, 0, 16]  # a middle row: away from the vertical padding
    for row in first_rows:
        values = row[row > 0] if row[0] == 0 or row[-1] == 0 else row
        steps = torch.diff(values)
        assert torch.all(steps == 1) or torch.all(steps == -1)  # a shifted, possibly mirrored, ramp
    flipped = (first_rows[:, 16] > first_rows[:, 15]).float().mean()
    assert 0.2 < flipped < 0.8  # both orientations occur
    assert torch.equal(random_crop_flip(x, padding=0).sort(dim=3).values, x)  # no padding: only flips


def test_data_on_device_trains_and_refuses_workers(tmp_path, capsys):
    args = ["run", "lenet", "--epochs", "2", "--data-on-device", "--no-progress", "-o", str(tmp_path / "run")]
    assert main(args) == 0
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in recs if r["phase"] == "training"] == [1438, 2876]
    assert [r for r in recs if r["phase"] == "validation"][-1]["accuracy"] > 0.9
    assert main([*args[:-2], "--num-workers", "2", "-o", str(tmp_path / "other")]) == 2
    assert "--data-on-device serves batches from device memory; it takes no --num-workers" in capsys.readouterr().err
