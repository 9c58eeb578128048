"""A researcher's own data: tabular arrays, torch Datasets, loaders, and partitioners by path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from fpzo_ray.config import DataConfig
from fpzo_ray.data import (
    ArrayDataset,
    AsFloat32,
    PartitionError,
    PixelNormalisation,
    Standardisation,
    as_array_dataset,
    check_partition,
    from_arrays,
    from_torch_datasets,
    hold_out_validation,
    label_histograms,
    load_target_dataset,
    make_partition,
)

# -- module-level components, named by import path (this module as pytest imported it) --------


def wine_pairs(test_size: float = 0.25) -> tuple[tuple, tuple]:
    """A loader returning ``((x_train, y_train), (x_test, y_test))``: 13 features, 3 classes."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    x, y = load_wine(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=0)
    return (x_tr, y_tr), (x_te, y_te)


def wine(test_size: float = 0.25) -> ArrayDataset:
    (x_tr, y_tr), test = wine_pairs(test_size)
    return from_arrays((x_tr, y_tr), test, name="wine", normalisation=Standardisation.fit(x_tr))


def my_partition(labels: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> list:
    """Deal the samples of each class round-robin over the clients (plain lists are fine)."""
    order = np.argsort(labels, kind="stable")
    return [order[c :: cfg.num_clients].tolist() for c in range(cfg.num_clients)]


def overlapping_partition(labels, cfg, rng) -> list[np.ndarray]:
    return [np.arange(2) for _ in range(cfg.num_clients)]


def path(attribute: str) -> str:
    return f"{__name__}:{attribute}"


# -- tabular arrays ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tabular() -> ArrayDataset:
    return wine()


def test_tabular_arrays_with_standardisation(tabular):
    ds = tabular
    assert ds.name == "wine" and ds.num_classes == 3
    assert ds.input_shape == (13,) and ds.num_train == 133
    assert ds.train_inputs.dtype == np.float64  # kept as given, converted per batch
    x, y = ds.train_batch(np.arange(ds.num_train))
    assert x.dtype == torch.float32 and tuple(x.shape) == (133, 13) and y.dtype == torch.int64
    np.testing.assert_allclose(x.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(0, unbiased=False).numpy(), 1.0, atol=1e-4)
    test_x, test_y = ds.test_set()
    assert tuple(test_x.shape) == (45, 13) and set(test_y.tolist()) == {0, 1, 2}
    norm = ds.normalisation
    expected = (ds.test_inputs[3, 5] - norm.mean[5]) / norm.std[5]
    assert test_x[3, 5].item() == pytest.approx(expected, rel=1e-5)


def test_normalisations_pickle_and_behave(tabular):
    norm = tabular.normalisation
    again = pickle.loads(pickle.dumps(norm))
    batch = tabular.train_inputs[:4]
    assert torch.equal(norm(batch), again(batch))
    pixels = PixelNormalisation(255.0, 0.5, 0.25)
    assert pickle.loads(pickle.dumps(pixels)) == pixels
    out = pixels(np.array([[0, 255]], dtype=np.uint8))
    assert out.dtype == torch.float32 and out.tolist() == [[-2.0, 2.0]]
    assert AsFloat32()(np.arange(3, dtype=np.int16)).dtype == torch.float32
    assert pickle.loads(pickle.dumps(tabular)).num_train == tabular.num_train
    # A constant feature is only centred; a non-positive std is refused.
    fitted = Standardisation.fit(np.array([[1.0, 2.0], [1.0, 4.0]]))
    assert fitted.std.tolist() == [1.0, 1.0] and fitted.mean.tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="std must be positive"):
        Standardisation(np.zeros(2), np.array([1.0, 0.0]))


def test_any_input_shape_and_torch_tensors():
    """Sequences (N, T, F) given as torch tensors; num_classes from the largest label."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, 6, generator=gen)
    y = torch.arange(30) % 5
    ds = from_arrays((x[:20], y[:20]), (x[20:], y[20:]))
    assert ds.name == "custom" and ds.num_classes == 5 and ds.input_shape == (4, 6)
    assert isinstance(ds.normalisation, AsFloat32)
    batch, labels = ds.train_batch(np.array([2, 7]))
    assert torch.equal(batch, x[[2, 7]]) and labels.tolist() == [2, 2]


def test_validation_split_on_tabular_data(tabular):
    split = hold_out_validation(tabular, 0.2, run_seed=3)
    assert split.val_inputs.shape[1:] == (13,)
    assert split.num_train + split.num_validation == tabular.num_train
    held = np.bincount(split.val_labels, minlength=3)
    assert np.array_equal(held, np.round(0.2 * np.bincount(tabular.train_labels)).astype(int))
    val_x, _ = split.validation_set()
    assert val_x.dtype == torch.float32 and tuple(val_x.shape) == (split.num_validation, 13)


@pytest.mark.parametrize("partition", ["iid", "dirichlet", "shards"])
def test_registered_partitioners_on_tabular_labels(tabular, partition):
    cfg = DataConfig(partition=partition, num_clients=10, alpha=0.5, shards_per_client=2)
    parts = make_partition(cfg, tabular.train_labels, run_seed=1)
    assert len(parts) == 10 and all(p.dtype == np.int64 and p.shape[0] >= 2 for p in parts)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(tabular.num_train))
    assert label_histograms(tabular.train_labels, parts, 3).sum() == tabular.num_train


# -- torch Datasets ---------------------------------------------------------------------------


class _Squares(Dataset):
    """A map-style Dataset of ``(tensor, int)`` items (not a TensorDataset)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((2, 3), float(i * i)), i % 4


def test_torch_datasets_are_materialised_once():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(24, 1, 5, 5, generator=gen), torch.arange(24) % 3
    ds = from_torch_datasets(
        TensorDataset(x[:16], y[:16]),
        TensorDataset(x[16:], y[16:]),
        name="tensors",
        normalisation=PixelNormalisation(1.0, 0.5, 0.5),
    )
    assert ds.name == "tensors" and ds.num_classes == 3 and ds.input_shape == (1, 5, 5)
    assert isinstance(ds.train_inputs, np.ndarray) and ds.num_train == 16
    batch, labels = ds.train_batch(np.array([0, 15]))
    assert torch.allclose(batch, (x[[0, 15]] - 0.5) / 0.5) and labels.tolist() == [0, 0]

    generic = from_torch_datasets(_Squares(12), _Squares(5), num_classes=4)
    assert generic.train_inputs.shape == (12, 2, 3) and generic.train_labels.dtype == np.int64
    assert generic.train_inputs[3, 1, 2] == 9.0 and generic.test_labels.tolist() == [0, 1, 2, 3, 0]


# -- what a loader may return -----------------------------------------------------------------


def test_as_array_dataset_accepts_each_form(tabular):
    assert as_array_dataset(tabular) is tabular
    pairs = as_array_dataset(wine_pairs(), name="pairs")
    assert pairs.name == "pairs" and pairs.input_shape == (13,) and pairs.num_classes == 3
    datasets = as_array_dataset([_Squares(8), _Squares(4)])
    assert datasets.num_train == 8 and datasets.num_classes == 4
    loaded = load_target_dataset(path("wine_pairs"), {"test_size": 0.5})
    assert loaded.name == path("wine_pairs") and loaded.test_labels.shape[0] == 89
    assert load_target_dataset(path("wine"), {}).name == "wine"


@pytest.mark.parametrize(
    "value",
    [
        {"train": 1},
        np.zeros((4, 2)),
        ((np.zeros((4, 2)), np.zeros(4, dtype=int)),),
        (np.zeros((4, 2)), np.zeros(4, dtype=int), np.zeros(4)),
        (TensorDataset(torch.zeros(2, 1), torch.zeros(2)), np.zeros(2)),
    ],
)
def test_as_array_dataset_refuses_other_returns(value):
    with pytest.raises(TypeError, match="^data.target: must return "):
        as_array_dataset(value)


X, Y = np.zeros((6, 3)), np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train": (X, Y[:5]), "test": (X, Y)}, "train has 6 inputs but 5 labels"),
        ({"train": (X[:, 0], Y), "test": (X, Y)}, r"inputs must have shape \(N, \.\.\.\)"),
        ({"train": (X, Y * 1.0), "test": (X, Y)}, "both must be class indices"),
        ({"train": (X, Y * np.nan), "test": (X, Y * 1.0)}, "NaN or infinite"),
        (
            {"train": (X, np.zeros((6, 2))), "test": (X, Y * 1.0)},
            r"train labels are \(2,\) per sample",
        ),
        ({"train": (X, Y), "test": (X, Y), "num_classes": 2}, r"labels must lie in \[0, "),
        ({"train": (X, Y - 1), "test": (X, Y)}, r"train labels must lie in .* -1\.\.1"),
        ({"train": (X, Y), "test": (X[:, :2], Y)}, r"per sample but test inputs \(2,\)"),
        ({"train": (X[:0], Y[:0]), "test": (X, Y)}, "train is empty"),
        ({"train": (X.astype(object), Y), "test": (X, Y)}, "must be numeric"),
        (
            {"train": (X, Y), "test": (X, Y), "normalisation": lambda b: b.astype(np.float32)},
            "must return a float32 torch.Tensor",
        ),
        (
            {"train": (X, Y), "test": (X, Y), "normalisation": lambda b: torch.zeros(1, 3)},
            "must return a float32 torch.Tensor",
        ),
        (
            {"train": (X, Y), "test": (X, Y), "normalisation": Standardisation(np.zeros(4), 1)},
            "normalisation .* failed on a batch",
        ),
    ],
)
def test_from_arrays_refuses_inconsistent_arrays(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        from_arrays(**kwargs)
    assert str(info.value).startswith("data.target: ")


def test_torch_dataset_items_must_be_pairs():
    class Triples(_Squares):
        def __getitem__(self, i):
            return torch.zeros(2), 0, "extra"

    with pytest.raises(ValueError, match=r"^data.target: train Dataset items must be"):
        from_torch_datasets(Triples(3), _Squares(3))


# -- a researcher's partitioner ---------------------------------------------------------------


def test_user_partitioner_by_import_path(tabular):
    cfg = DataConfig(partition=path("my_partition"), num_clients=7)
    parts = make_partition(cfg, tabular.train_labels, run_seed=0)
    assert len(parts) == 7 and all(p.dtype == np.int64 for p in parts)
    assert all(np.array_equal(p, np.sort(p)) for p in parts)  # normalised to sorted int64
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(tabular.num_train))
    hist = label_histograms(tabular.train_labels, parts, 3)
    assert (np.ptp(hist, axis=0) <= 1).all()  # each class dealt evenly


def test_bad_user_partition_is_a_partition_error(tabular):
    cfg = DataConfig(partition=path("overlapping_partition"), num_clients=3)
    with pytest.raises(PartitionError, match=r"^config error: data\.partition: .* returned "):
        make_partition(cfg, tabular.train_labels, run_seed=0)


@pytest.mark.parametrize(
    "parts, message",
    [
        (np.arange(6).reshape(3, 2), "a ndarray, not a list"),
        ([np.arange(2), np.arange(2, 4)], "2 index arrays for data.num_clients=3"),
        ([[0], [1], []], "no samples for client 2"),
        ([[0], [1], [6]], "index 6 for client 2, outside the 6 training samples"),
        ([[0], [-1], [2]], "index -1 for client 1"),
        ([[0, 1], [1, 2], [3]], "sample 1 for client 1 and an earlier client"),
        ([[0, 0], [1], [2]], "a sample index twice for client 0"),
        ([[0.0], [1.0], [2.0]], "dtype float64 for client 0"),
        ([np.ones(2, dtype=bool), [1], [2]], "dtype bool for client 0"),
        ([[[0]], [1], [2]], r"shape \(1, 1\)"),
    ],
)
def test_check_partition_refuses(parts, message):
    with pytest.raises(PartitionError, match=message) as info:
        check_partition(parts, 6, 3, "mine:split")
    assert str(info.value).startswith("config error: data.partition: mine:split returned ")


def test_check_partition_may_leave_samples_out():
    parts = check_partition(([4, 0], np.array([2], dtype=np.int32)), 6, 2, "mine:split")
    assert [p.tolist() for p in parts] == [[0, 4], [2]] and parts[1].dtype == np.int64
