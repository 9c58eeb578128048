"""The torchvision-backed loaders, on small fixtures written in each data set's real format.

Each fixture is a few random images with known labels, written where torchvision looks for
the data set and in the same on-disk format as the official files, so the loaders are tested
end to end through torchvision's own parsing (only the md5 check is relaxed, see registry.py).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DATA_ROOT

from fpzo_ray.config import ConfigError, DataConfig, RunConfig
from fpzo_ray.data import PixelNormalisation, load_dataset
from fpzo_ray.preflight import preflight

N_TRAIN, N_TEST = 20, 10


def _random_images(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --- MNIST / Fashion-MNIST: uncompressed IDX files -------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: magic 0x0000 08 <ndim> (08 = unsigned byte), big-endian int32 dims, data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _write_mnist_format(raw: Path) -> dict[str, np.ndarray]:
    raw.mkdir(parents=True)
    arrays = {
        "train_inputs": _random_images(1, (N_TRAIN, 28, 28)),
        "train_labels": (np.arange(N_TRAIN) * 3 % 10).astype(np.uint8),
        "test_inputs": _random_images(2, (N_TEST, 28, 28)),
        "test_labels": (9 - np.arange(N_TEST)).astype(np.uint8),
    }
    _write_idx(raw / "train-images-idx3-ubyte", arrays["train_inputs"])
    _write_idx(raw / "train-labels-idx1-ubyte", arrays["train_labels"])
    _write_idx(raw / "t10k-images-idx3-ubyte", arrays["test_inputs"])
    _write_idx(raw / "t10k-labels-idx1-ubyte", arrays["test_labels"])
    return arrays


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_format_round_trip(tmp_path, name, folder):
    written = _write_mnist_format(tmp_path / folder / "raw")
    ds = load_dataset(DataConfig(name=name, root=str(tmp_path)))
    assert ds.name == name and ds.num_classes == 10 and ds.normalisation.pixel_max == 255.0
    assert ds.train_inputs.shape == (N_TRAIN, 1, 28, 28) and ds.test_inputs.shape == (
        N_TEST,
        1,
        28,
        28,
    )
    assert ds.train_inputs.dtype == np.uint8 and ds.train_labels.dtype == np.uint8
    assert ds.train_inputs[7, 0, 3, 21] == written["train_inputs"][7, 3, 21]
    np.testing.assert_array_equal(ds.train_inputs[:, 0], written["train_inputs"])
    np.testing.assert_array_equal(ds.test_inputs[:, 0], written["test_inputs"])
    np.testing.assert_array_equal(ds.train_labels, written["train_labels"])
    np.testing.assert_array_equal(ds.test_labels, written["test_labels"])
    assert ds.input_shape == (1, 28, 28)


def test_a_torchvision_class_by_import_path_reads_its_files_from_data_root(tmp_path):
    """``data.target: torchvision.datasets:KMNIST``: no adapter; the class's own files under
    ``data.root``, kept as uint8 NCHW; missing files or no network are one line."""
    written = _write_mnist_format(tmp_path / "KMNIST" / "raw")
    data = DataConfig(target="torchvision.datasets:KMNIST", root=str(tmp_path))
    ds = load_dataset(data)
    assert ds.train_inputs.shape == (N_TRAIN, 1, 28, 28) and ds.train_inputs.dtype == np.uint8
    np.testing.assert_array_equal(ds.test_inputs[:, 0], written["test_inputs"])
    np.testing.assert_array_equal(ds.train_labels, written["train_labels"])
    assert ds.num_classes == 10 and ds.normalisation.pixel_max == 255.0
    pixels = written["train_inputs"] / 255.0
    assert ds.normalisation.mean == pytest.approx(pixels.mean(), rel=1e-5)

    missing = RunConfig(data=DataConfig(target=data.target, root=str(tmp_path / "absent")))
    with pytest.raises(ConfigError, match=r"^config error: data\.root: KMNIST not found"):
        preflight([missing])


# --- CIFAR-10 / CIFAR-100: pickled Python 2 dicts --------------------------------------------


class _Python2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (the BINSTRING opcodes), as in the official files.

    The CIFAR batches were pickled by Python 2, so their keys are byte strings: loaded with
    ``encoding="bytes"`` (the data set page's recipe) they are ``b'data'``, loaded with
    ``encoding="latin1"`` (torchvision) they are ``'data'``. A Python 3 pickle of a dict with
    ``bytes`` keys would only give ``b'data'``, which torchvision cannot read.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def _write_python2_pickle(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        _Python2Pickler(f, protocol=2).dump(obj)


def _cifar_rows(seed: int, n: int) -> np.ndarray:
    """``n`` images as the files store them: 3072 bytes each, the 1024 R, then G, then B."""
    return _random_images(seed, (n, 3 * 32 * 32))


def _write_cifar10(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    rows, labels = _cifar_rows(3, N_TRAIN), (np.arange(N_TRAIN) * 7 % 10).astype(np.uint8)
    per_batch = N_TRAIN // 5
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        _write_python2_pickle(
            folder / f"data_batch_{b + 1}",
            {
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": [int(y) for y in labels[part]],
                b"data": rows[part],
                b"filenames": [f"img_{i}.png".encode() for i in range(part.start, part.stop)],
            },
        )
    test_rows, test_labels = _cifar_rows(4, N_TEST), np.arange(N_TEST, dtype=np.uint8)
    _write_python2_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(y) for y in test_labels],
            b"data": test_rows,
            b"filenames": [f"test_{i}.png".encode() for i in range(N_TEST)],
        },
    )
    _write_python2_pickle(
        folder / "batches.meta",
        {
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
            b"label_names": [
                b"airplane",
                b"automobile",
                b"bird",
                b"cat",
                b"deer",
                b"dog",
                b"frog",
                b"horse",
                b"ship",
                b"truck",
            ],
        },
    )
    return {
        "train_rows": rows,
        "train_labels": labels,
        "test_rows": test_rows,
        "test_labels": test_labels,
    }


def _write_cifar100(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    out = {
        "train_rows": _cifar_rows(5, N_TRAIN),
        "test_rows": _cifar_rows(6, N_TEST),
        "train_labels": (np.arange(N_TRAIN) * 37 % 100).astype(np.uint8),
        "test_labels": (99 - np.arange(N_TEST) * 11).astype(np.uint8),
    }
    for split in ("train", "test"):
        labels = out[f"{split}_labels"]
        _write_python2_pickle(
            folder / split,
            {
                b"filenames": [f"{split}_{i}.png".encode() for i in range(labels.shape[0])],
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": [int(y) for y in labels],
                b"coarse_labels": [int(y) // 5 for y in labels],
                b"data": out[f"{split}_rows"],
            },
        )
    _write_python2_pickle(
        folder / "meta",
        {
            b"fine_label_names": [f"class_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"superclass_{i}".encode() for i in range(20)],
        },
    )
    return out


def _check_cifar(ds, written: dict[str, np.ndarray], num_classes: int) -> None:
    assert ds.num_classes == num_classes and ds.normalisation.pixel_max == 255.0
    assert ds.train_inputs.shape == (N_TRAIN, 3, 32, 32) and ds.test_inputs.shape == (
        N_TEST,
        3,
        32,
        32,
    )
    assert ds.train_inputs.dtype == np.uint8 and ds.test_labels.dtype == np.uint8
    assert ds.train_inputs.flags.c_contiguous
    # A pixel (c, h, w) is byte c*1024 + h*32 + w of its row: channel planes survive HWC->CHW.
    row = written["train_rows"][13]
    for c, h, w in [(0, 0, 0), (1, 5, 30), (2, 31, 7)]:
        assert ds.train_inputs[13, c, h, w] == row[c * 1024 + h * 32 + w]
    np.testing.assert_array_equal(ds.train_inputs.reshape(N_TRAIN, -1), written["train_rows"])
    np.testing.assert_array_equal(ds.test_inputs.reshape(N_TEST, -1), written["test_rows"])
    np.testing.assert_array_equal(ds.train_labels, written["train_labels"])
    np.testing.assert_array_equal(ds.test_labels, written["test_labels"])


def test_cifar10_round_trip(tmp_path):
    written = _write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    assert ds.name == "cifar10"
    _check_cifar(ds, written, num_classes=10)
    images, labels = ds.train_batch(np.array([0, 5]))
    assert tuple(images.shape) == (2, 3, 32, 32) and labels.tolist() == [0, 5]
    norm = ds.normalisation
    expected = (written["train_rows"][5, 1024 + 2 * 32 + 3] / 255.0 - norm.mean) / norm.std
    assert images[1, 1, 2, 3].item() == pytest.approx(expected, rel=1e-5)


def test_cifar100_round_trip_keeps_100_fine_labels(tmp_path):
    written = _write_cifar100(tmp_path / "cifar-100-python")
    ds = load_dataset(DataConfig(name="cifar100", root=str(tmp_path)))
    assert ds.name == "cifar100"
    _check_cifar(ds, written, num_classes=100)
    assert ds.train_labels.max() > 90 and ds.test_labels[0] == 99


def test_cifar_fixture_reads_like_the_official_files(tmp_path):
    """The fixture itself: ``encoding="bytes"`` gives ``b'data'`` keys, like the real files."""
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    with (tmp_path / "cifar-10-batches-py" / "data_batch_1").open("rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")
    with (tmp_path / "cifar-10-batches-py" / "data_batch_1").open("rb") as f:
        as_latin1 = pickle.load(f, encoding="latin1")
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert set(as_latin1) == {"batch_label", "labels", "data", "filenames"}
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (N_TRAIN // 5, 3072)


# --- SVHN: MATLAB files -----------------------------------------------------------------------


def _write_svhn(root: Path, split: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``X`` is (32, 32, 3, N) and ``y`` is (N, 1) with 1..10, where 10 stands for digit 0."""
    from scipy.io import savemat

    x = _random_images(seed, (32, 32, 3, n))
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
    root.mkdir(parents=True, exist_ok=True)
    savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
    return x, y


def test_svhn_round_trip_maps_label_10_to_digit_0(tmp_path):
    x_train, y_train = _write_svhn(tmp_path, "train", 7, N_TRAIN)
    x_test, y_test = _write_svhn(tmp_path, "test", 8, N_TEST)
    ds = load_dataset(DataConfig(name="svhn", root=str(tmp_path)))
    assert ds.name == "svhn" and ds.num_classes == 10 and ds.normalisation.pixel_max == 255.0
    assert ds.train_inputs.shape == (N_TRAIN, 3, 32, 32) and ds.test_inputs.shape == (
        N_TEST,
        3,
        32,
        32,
    )
    assert ds.train_inputs.dtype == np.uint8 and ds.train_labels.dtype == np.uint8
    assert ds.train_inputs.flags.c_contiguous
    assert ds.train_inputs[4, 2, 10, 25] == x_train[10, 25, 2, 4]  # X is (H, W, C, N)
    np.testing.assert_array_equal(ds.train_inputs, x_train.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(ds.test_inputs, x_test.transpose(3, 2, 0, 1))
    assert y_train[9, 0] == 10 and ds.train_labels[9] == 0
    np.testing.assert_array_equal(ds.train_labels, y_train[:, 0] % 10)
    np.testing.assert_array_equal(ds.test_labels, y_test[:, 0] % 10)


# --- shared behaviour -------------------------------------------------------------------------

TORCHVISION_DATASETS = ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"]


@pytest.mark.parametrize("name", TORCHVISION_DATASETS)
def test_missing_data_set_names_data_root(tmp_path, name):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(DataConfig(name=name, root=str(tmp_path / "absent")))
    assert str(info.value).startswith("data.root:")
    assert str(tmp_path / "absent") in str(info.value)


def test_missing_data_set_is_a_one_line_config_error(tmp_path):
    cfg = RunConfig(data=DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"^config error: data\.root: CIFAR-10 not found"):
        preflight([cfg])


@pytest.mark.parametrize("name", TORCHVISION_DATASETS)
def test_a_download_without_a_network_is_one_line_naming_data_download(
    tmp_path, monkeypatch, capsys, name
):
    """No network (every URL refused, as on a cluster node without egress): one line naming
    ``data.download`` and the reason, no traceback, none of torchvision's mirror chatter."""
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cfg = RunConfig(data=DataConfig(name=name, root=str(tmp_path / "empty"), download=True))
    with pytest.raises(ConfigError) as info:
        preflight([cfg])
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith("config error: data.download: "), line
    assert "Name or service not known" in line and "set data.download=false" in line
    assert "Failed to download" not in capsys.readouterr().out


def test_incomplete_cifar_folder_is_missing(tmp_path):
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="^data.root:"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


@pytest.mark.parametrize(
    "name, mean, std",
    [
        ("fashion_mnist", 0.2860, 0.3530),
        ("cifar10", 0.4734, 0.2516),
        ("cifar100", 0.4782, 0.2682),
        ("svhn", 0.4515, 0.1993),
    ],
)
def test_normalisation_constants(tmp_path, name, mean, std):
    if name == "fashion_mnist":
        _write_mnist_format(tmp_path / "FashionMNIST" / "raw")
    elif name == "cifar10":
        _write_cifar10(tmp_path / "cifar-10-batches-py")
    elif name == "cifar100":
        _write_cifar100(tmp_path / "cifar-100-python")
    else:
        _write_svhn(tmp_path, "train", 7, N_TRAIN)
        _write_svhn(tmp_path, "test", 8, N_TEST)
    ds = load_dataset(DataConfig(name=name, root=str(tmp_path)))
    norm = ds.normalisation
    assert isinstance(norm, PixelNormalisation) and norm.pixel_max == 255.0
    assert norm.mean == pytest.approx(mean, abs=2e-4) and norm.std == pytest.approx(std, abs=2e-4)


def test_real_mnist():
    if not (REAL_DATA_ROOT / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not available under {REAL_DATA_ROOT}")
    ds = load_dataset(DataConfig(name="mnist", root=str(REAL_DATA_ROOT)))
    assert ds.train_inputs.shape == (60000, 1, 28, 28) and ds.test_inputs.shape == (
        10000,
        1,
        28,
        28,
    )
    assert ds.train_inputs.dtype == np.uint8 and ds.train_labels.dtype == np.uint8
    assert int((ds.train_labels == 1).sum()) == 6742
    assert np.bincount(ds.train_labels, minlength=10).sum() == 60000


def test_a_split_in_read_only_memory_becomes_a_writable_tensor_without_a_warning():
    """Ray's object store hands arrays over read-only; torch warned ("The given NumPy array
    is not writable") on every trial's first evaluation."""
    import warnings

    from fpzo_ray.data import from_arrays

    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.array([0, 1, 0, 1, 0, 1])
    dataset = from_arrays(train=(x, y), test=(x.copy(), y.copy()))
    dataset.test_inputs.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inputs, _ = dataset.test_set()
    inputs.add_(1.0)  # a model may change its input in place
    assert float(dataset.test_inputs[0, 0]) == 0.0
