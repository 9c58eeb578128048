"""Data sets as arrays: :class:`ArrayDataset`, its normalisations, and a researcher's own data.

A data set is a train/test split of inputs (any per-sample shape: images ``(C, H, W)``,
tabular rows ``(F,)``, sequences) with their targets, and the normalisation that turns a
batch of its stored inputs into the model's ``float32`` tensor. Targets are class indices
``(N,)`` (classification: the partitions by label and the stratified validation split read
them), or anything else a task's loss takes (``task.loss``): real values ``(N,)`` or
``(N, D)`` (regression), 0/1 rows ``(N, C)`` (multi-label), token ids ``(N, T)``. Integer
targets become ``int64`` tensors, the others ``float32``. Inputs are kept as they were
loaded (images as raw ``uint8``) and normalised batch by batch: that keeps the footprint small
(MNIST's training set is 47 MB instead of 188 MB) and lets Ray share one copy through its
object store with zero-copy reads by every worker actor on a node.

A loader named in the configuration (``data: {target: "my_data:load", args: {...}}``) is
called as ``load(**args)`` and may return an :class:`ArrayDataset` (built with
:func:`from_arrays` or :func:`from_torch_datasets`), a ``(train, test)`` pair of
``(inputs, labels)`` tuples, or a ``(train, test)`` pair of ``torch.utils.data.Dataset``;
:func:`as_array_dataset` accepts any of them (``docs/EXTENDING.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fpzo_ray.task.losses import IGNORE_INDEX

#: ``normalisation(inputs) -> float32 tensor`` of the same batch (leading) dimension.
Normalisation = Callable[[np.ndarray], torch.Tensor]


def _float32_tensor(inputs: np.ndarray) -> torch.Tensor:
    """``inputs`` as a float32 tensor sharing their memory where it can: read-only memory
    (a whole split as Ray's object store hands it over) is copied, as a tensor may be written
    to (a model may change its input in place; torch warns about every such array)."""
    array = np.ascontiguousarray(inputs, dtype=np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def has_class_labels(labels: np.ndarray) -> bool:
    """Whether targets are one class index per sample (what label partitions stratify by)."""
    return labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer)


def targets_tensor(labels: np.ndarray) -> torch.Tensor:
    """Targets as the loss takes them: integers as ``int64``, anything else ``float32``."""
    if np.issubdtype(labels.dtype, np.integer):
        return torch.from_numpy(labels.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))


@dataclass(frozen=True)
class AsFloat32:
    """The identity normalisation: the stored inputs, converted to ``float32``."""

    def __call__(self, inputs: np.ndarray) -> torch.Tensor:
        return _float32_tensor(inputs)


@dataclass(frozen=True)
class PixelNormalisation:
    """Images: a pixel ``p`` becomes ``(p / pixel_max - mean) / std`` (scalars, all channels)."""

    pixel_max: float
    mean: float
    std: float

    def __call__(self, inputs: np.ndarray) -> torch.Tensor:
        return (_float32_tensor(inputs) / self.pixel_max - self.mean) / self.std


@dataclass(frozen=True, eq=False)
class Standardisation:
    """Per-feature standardisation ``(x - mean) / std``.

    ``mean`` and ``std`` are arrays of the per-sample input shape (or broadcastable to it),
    typically the training inputs' statistics: :meth:`fit`. Stored as ``float32``.
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.ascontiguousarray(_to_numpy(self.mean), dtype=np.float32)
        std = np.ascontiguousarray(_to_numpy(self.std), dtype=np.float32)
        if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)):
            raise ValueError("Standardisation: mean and std must be finite")
        if np.any(std <= 0):
            raise ValueError("Standardisation: std must be positive for every feature")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, train_inputs: Any, min_std: float = 1e-8) -> Standardisation:
        """The statistics of ``train_inputs`` ``(N, ...)`` per feature; a constant feature
        (std below ``min_std``) is only centred (std 1)."""
        x = np.asarray(_to_numpy(train_inputs), dtype=np.float64)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError("Standardisation.fit: needs at least one training sample")
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std < min_std, 1.0, std))

    def __call__(self, inputs: np.ndarray) -> torch.Tensor:
        x = np.asarray(inputs, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray((x - self.mean) / self.std))


@dataclass(frozen=True)
class ArrayDataset:
    """A train/test split of inputs with their targets ("labels": see the module docstring),
    and optionally a validation split. ``num_classes`` is the size of the model's output per
    sample (per token): the classes, a regression's outputs, the labels of a multi-label task,
    a vocabulary.

    ``train_inputs`` has shape ``(N, *input_shape)`` and any numeric dtype; a batch of them
    becomes the model's ``float32`` tensor through ``normalisation`` (owned by the data set,
    shipped with it to every worker, so it must pickle: a module-level function or an object
    like :class:`PixelNormalisation`). The validation split (empty as loaded) is carved out
    of the training pool by ``data.validation.hold_out_validation``.
    """

    name: str
    train_inputs: np.ndarray
    train_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    normalisation: Normalisation = field(default_factory=AsFloat32)
    val_inputs: np.ndarray | None = None
    val_labels: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.train_inputs.shape[1:])

    @property
    def num_train(self) -> int:
        return int(self.train_labels.shape[0])

    def normalise(self, inputs: np.ndarray) -> torch.Tensor:
        return self.normalisation(inputs)

    def train_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised inputs and labels of the given training indices (a copy)."""
        return self.normalise(self.train_inputs[indices]), targets_tensor(
            self.train_labels[indices]
        )

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.normalise(self.test_inputs), targets_tensor(self.test_labels)

    @property
    def has_class_labels(self) -> bool:
        return has_class_labels(self.train_labels)

    @property
    def num_validation(self) -> int:
        return 0 if self.val_labels is None else int(self.val_labels.shape[0])

    def validation_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Normalised validation inputs and labels, or None when nothing was held out."""
        if self.num_validation == 0:
            return None
        assert self.val_inputs is not None and self.val_labels is not None
        return self.normalise(self.val_inputs), targets_tensor(self.val_labels)


# -- a researcher's data ----------------------------------------------------------------------

_PREFIX = "data.target: "


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _split_arrays(split: str, pair: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, labels)`` of one split as contiguous numpy arrays, checked."""
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(
            f"{_PREFIX}{split} must be an (inputs, labels) pair, got {type(pair).__name__}"
        )
    try:
        x, y = _to_numpy(pair[0]), _to_numpy(pair[1])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{_PREFIX}{split} inputs or labels are not arrays: {exc}") from None
    if x.ndim < 2:
        raise ValueError(
            f"{_PREFIX}{split} inputs must have shape (N, ...), one row per sample; got shape "
            f"{x.shape} (a single feature per sample: reshape to (N, 1))"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{_PREFIX}{split} inputs must be numeric, got dtype {x.dtype}")
    if y.ndim < 1:
        raise ValueError(f"{_PREFIX}{split} labels must have shape (N, ...), got {y.shape}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise ValueError(f"{_PREFIX}{split} labels must be numeric, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise ValueError(f"{_PREFIX}{split} labels hold NaN or infinite values")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{_PREFIX}{split} has {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{_PREFIX}{split} is empty")
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def check_array_dataset(dataset: ArrayDataset) -> ArrayDataset:
    """Raise a ``ValueError`` starting with ``data.target:`` unless ``dataset`` is usable:
    matching shapes and lengths, labels in ``[0, num_classes)``, and a normalisation that
    turns a batch into a ``float32`` tensor of that batch size. Returns ``dataset``."""
    _split_arrays("train", (dataset.train_inputs, dataset.train_labels))
    _split_arrays("test", (dataset.test_inputs, dataset.test_labels))
    if dataset.train_inputs.shape[1:] != dataset.test_inputs.shape[1:]:
        raise ValueError(
            f"{_PREFIX}train inputs are {dataset.train_inputs.shape[1:]} per sample but test "
            f"inputs {dataset.test_inputs.shape[1:]}"
        )
    if dataset.train_labels.shape[1:] != dataset.test_labels.shape[1:]:
        raise ValueError(
            f"{_PREFIX}train labels are {dataset.train_labels.shape[1:]} per sample but test "
            f"labels {dataset.test_labels.shape[1:]}"
        )
    integer = [
        np.issubdtype(y.dtype, np.integer) for y in (dataset.train_labels, dataset.test_labels)
    ]
    if integer[0] != integer[1]:
        raise ValueError(
            f"{_PREFIX}train labels are {dataset.train_labels.dtype} but test labels "
            f"{dataset.test_labels.dtype}: both must be class indices (integers) or both real "
            "targets"
        )
    k = dataset.num_classes
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{_PREFIX}num_classes must be a positive integer, got {k!r}")
    for split, labels in (("train", dataset.train_labels), ("test", dataset.test_labels)):
        if not np.issubdtype(labels.dtype, np.integer):
            continue  # real targets: no classes to lie in
        counted = labels[labels != IGNORE_INDEX] if labels.ndim > 1 else labels
        if counted.size == 0:
            continue
        low, high = int(counted.min()), int(counted.max())
        if low < 0 or high >= k:
            raise ValueError(
                f"{_PREFIX}{split} labels must lie in [0, num_classes={k}), found {low}..{high}"
            )
    norm = dataset.normalisation
    if not callable(norm):
        raise ValueError(f"{_PREFIX}normalisation must be callable, got {type(norm).__name__}")
    sample = dataset.train_inputs[:2]
    try:
        out = norm(sample)
    except Exception as exc:  # noqa: BLE001 - the user's normalisation failed: say where
        raise ValueError(
            f"{_PREFIX}normalisation {norm!r} failed on a batch of training inputs "
            f"{sample.shape} {sample.dtype}: {type(exc).__name__}: {exc}"
        ) from exc
    if not (
        isinstance(out, torch.Tensor)
        and out.dtype == torch.float32
        and out.ndim >= 1
        and out.shape[0] == sample.shape[0]
    ):
        got = (
            f"a {out.dtype} tensor of shape {tuple(out.shape)}"
            if isinstance(out, torch.Tensor)
            else f"a {type(out).__name__}"
        )
        raise ValueError(
            f"{_PREFIX}normalisation {norm!r} must return a float32 torch.Tensor with one row "
            f"per input; on {sample.shape[0]} training inputs it returned {got}"
        )
    return dataset


def from_arrays(
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    num_classes: int | None = None,
    name: str = "custom",
    normalisation: Normalisation | None = None,
) -> ArrayDataset:
    """An :class:`ArrayDataset` from ``(inputs, labels)`` of each split.

    Inputs are numpy arrays or torch tensors of shape ``(N, ...)`` (images ``(N, C, H, W)``,
    tabular ``(N, F)``, ...) of any numeric dtype, kept as given; labels are integer class
    indices ``(N,)`` or other targets (module docstring). ``num_classes`` defaults to the
    largest label + 1 for integer targets, and to the values per sample for real ones.
    ``normalisation``
    (default :class:`AsFloat32`) maps a batch of inputs to the model's ``float32`` tensor,
    e.g. ``Standardisation.fit(x_train)`` for tabular features. Raises ``ValueError``
    starting with ``data.target:`` for inconsistent arrays.
    """
    x_tr, y_tr = _split_arrays("train", train)
    x_te, y_te = _split_arrays("test", test)
    if num_classes is None:
        num_classes = _output_size(y_tr, y_te)
    return check_array_dataset(
        ArrayDataset(
            name,
            x_tr,
            y_tr,
            x_te,
            y_te,
            num_classes=num_classes,
            normalisation=normalisation if normalisation is not None else AsFloat32(),
        )
    )


def _output_size(*labels: np.ndarray) -> int:
    """The model's outputs a sample (a token) the targets call for: the classes of integer
    targets (padding, :data:`IGNORE_INDEX`, aside), the values a sample of real ones."""
    if np.issubdtype(labels[0].dtype, np.integer):
        return max(int(y[y != IGNORE_INDEX].max(initial=0)) for y in labels) + 1
    return int(np.prod(labels[0].shape[1:], dtype=np.int64))


def _materialise(split: str, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """All ``(input, label)`` items of a map-style torch ``Dataset`` as two arrays."""
    from torch.utils.data import Dataset, TensorDataset

    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return _to_numpy(dataset.tensors[0]), _to_numpy(dataset.tensors[1])
    if not isinstance(dataset, Dataset) or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"{_PREFIX}{split} must be a map-style torch.utils.data.Dataset (with __len__), "
            f"got {type(dataset).__name__}"
        )
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{_PREFIX}{split} Dataset is empty")
    inputs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for i in range(n):
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(
                f"{_PREFIX}{split} Dataset items must be (input_tensor, int_label) pairs; "
                f"item {i} is a {type(item).__name__}"
            )
        x, y = item
        try:
            array = _to_numpy(x)
            label = _to_numpy(y)
            if not (np.issubdtype(label.dtype, np.number) or label.dtype == np.bool_):
                raise TypeError(f"a label of dtype {label.dtype}")
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{_PREFIX}{split} Dataset item {i} is no (input_tensor, int_label) pair "
                f"(input {type(x).__name__}, label {type(y).__name__}; a PIL image needs a "
                f"ToTensor transform): {exc}"
            ) from None
        if inputs and array.shape != inputs[0].shape:
            raise ValueError(
                f"{_PREFIX}{split} Dataset item {i} has input shape {array.shape}, item 0 "
                f"{inputs[0].shape}: every input must have the same shape"
            )
        if labels and label.shape != labels[0].shape:
            raise ValueError(
                f"{_PREFIX}{split} Dataset item {i} has label shape {label.shape}, item 0 "
                f"{labels[0].shape}: every target must have the same shape"
            )
        inputs.append(array)
        labels.append(label)
    stacked = np.stack(labels)
    return np.stack(inputs), stacked.astype(np.int64) if stacked.dtype.kind in "iub" else stacked


def from_torch_datasets(
    train: Any,
    test: Any,
    num_classes: int | None = None,
    name: str = "custom",
    normalisation: Normalisation | None = None,
) -> ArrayDataset:
    """An :class:`ArrayDataset` from two map-style ``torch.utils.data.Dataset`` whose items are
    ``(input_tensor, int_label)``.

    Every item is read once, here, and the inputs are stacked into one array per split: the
    simulator ships that single copy through Ray's object store to every worker instead of
    calling ``__getitem__`` per batch. So the data set must fit in memory, and its
    transforms run once: a random augmentation is frozen into one draw per sample, and a
    ``Normalize`` transform is baked in (leave ``normalisation`` at its default,
    :class:`AsFloat32`, then). Other arguments as :func:`from_arrays`.
    """
    return from_arrays(
        _materialise("train", train),
        _materialise("test", test),
        num_classes=num_classes,
        name=name,
        normalisation=normalisation,
    )


def _is_torch_dataset(value: Any) -> bool:
    from torch.utils.data import Dataset

    return isinstance(value, Dataset)


def as_array_dataset(value: Any, name: str = "custom") -> ArrayDataset:
    """What a ``data.target`` loader returned, as a checked :class:`ArrayDataset`.

    Accepted: an :class:`ArrayDataset`; a ``(train, test)`` pair of ``(inputs, labels)``
    tuples (:func:`from_arrays`, named ``name``); a ``(train, test)`` pair of torch
    ``Dataset`` (:func:`from_torch_datasets`). Anything else raises ``TypeError`` starting
    with ``data.target: must return``; inconsistent contents raise ``ValueError``.
    """
    if isinstance(value, ArrayDataset):
        return check_array_dataset(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        train, test = value
        if _is_torch_dataset(train) and _is_torch_dataset(test):
            return from_torch_datasets(train, test, name=name)
        if all(isinstance(s, (tuple, list)) and len(s) == 2 for s in (train, test)):
            return from_arrays(train, test, name=name)
    shape = (
        f"a {type(value).__name__} of {len(value)}"
        if isinstance(value, (tuple, list))
        else f"a {type(value).__name__}"
    )
    raise TypeError(
        f"{_PREFIX}must return an ArrayDataset (fpzo_ray.data.from_arrays or "
        "from_torch_datasets), a (train, test) pair of (inputs, labels) tuples, or a "
        f"(train, test) pair of torch Datasets; got {shape}"
    )


def load_target_dataset(target: str, args: Mapping[str, Any] | None = None) -> ArrayDataset:
    """The data set of a researcher's loader: ``target`` (``module:function``) imported by
    ``fpzo_ray.registry.import_target`` (its ``TargetError`` when that fails), called as
    ``function(**args)``, and its result passed through :func:`as_array_dataset` (named
    after ``target`` unless it is an :class:`ArrayDataset` already)."""
    from fpzo_ray.registry import import_target

    loader = import_target(target)
    return as_array_dataset(loader(**dict(args or {})), name=target)
