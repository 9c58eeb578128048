"""The built-in data sets: every loader ``load(cfg.data)`` returns an :class:`ArrayDataset`.

``fpzo_ray.registry.DATASETS`` names them. Images are kept as raw ``uint8`` arrays and
normalised batch by batch by the data set's :class:`PixelNormalisation` (see ``arrays``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fpzo_ray.config import DataConfig
from fpzo_ray.data.arrays import (
    ArrayDataset,
    PixelNormalisation,
    check_array_dataset,
    load_target_dataset,
)
from fpzo_ray.registry import DATASETS


def load_digits_dataset(cfg: DataConfig) -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, no network).

    The held-out test split is fixed (stratified, 20 %, random_state 0) so that runs with
    different seeds are evaluated on the same images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    pixels = x_tr.astype(np.float64) / 16.0
    return ArrayDataset(
        "digits",
        x_tr,
        y_tr,
        x_te,
        y_te,
        num_classes=10,
        normalisation=PixelNormalisation(16.0, float(pixels.mean()), float(pixels.std())),
    )


def _pooled_scalar_stats(
    channel_means: tuple[float, ...], channel_stds: tuple[float, ...]
) -> tuple[float, float]:
    """One ``(mean, std)`` for all channels from published per-channel statistics.

    :class:`PixelNormalisation` takes scalars so that every image data set goes through the
    same code path. The scalar mean is the average of the channel means; the scalar std is the std
    of all pixels pooled over channels, ``sqrt(mean(std_c**2) + var(mean_c))`` (channels have
    equally many pixels), so normalised pixels still have unit variance overall.
    """
    means = np.asarray(channel_means, dtype=np.float64)
    stds = np.asarray(channel_stds, dtype=np.float64)
    return float(means.mean()), float(np.sqrt((stds**2).mean() + means.var()))


# Per-channel training-set statistics as commonly published for these data sets (pixels scaled
# to [0, 1]; the values used by the usual torchvision training recipes), pooled to scalars:
# CIFAR-10 (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616)  -> 0.4734 / 0.2516
# CIFAR-100 (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762) -> 0.4782 / 0.2682
# SVHN train (0.4377, 0.4438, 0.4728) / (0.1980, 0.2010, 0.1970) -> 0.4514 / 0.1993
CIFAR10_MEAN, CIFAR10_STD = _pooled_scalar_stats((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_MEAN, CIFAR100_STD = _pooled_scalar_stats(
    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
)
SVHN_MEAN, SVHN_STD = _pooled_scalar_stats((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
# Single-channel data sets: the published scalar training-set statistics.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530


def _not_found(title: str, root: Path, expected: str) -> FileNotFoundError:
    """The error every torchvision loader raises for a missing data set.

    It starts with the config field to fix (``data.root:``) so that the CLI can report it as a
    one-line configuration error.
    """
    return FileNotFoundError(
        f"data.root: {title} not found under {root}; point data.root at a folder holding "
        f"{expected}, or set data.download=true"
    )


def _splits(
    cfg: DataConfig, title: str, root: Path, expected: str, split: Callable[[bool], Any]
) -> tuple[Any, Any]:
    """torchvision's training and test splits (``split(True)``, ``split(False)``), or the
    one-line error naming the field to fix: ``data.root`` for missing files, ``data.download``
    for a download that failed (no network, say). What torchvision prints while it tries its
    mirrors is shown only when the download succeeds: the error says why it failed."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said) if cfg.download else contextlib.nullcontext():
            train, test = split(True), split(False)
    except (RuntimeError, OSError) as exc:
        if not cfg.download:
            raise _not_found(title, root, expected) from None
        reason = _innermost(exc)
        raise FileNotFoundError(
            f"data.download: {title} could not be downloaded into {root} ({reason}); without "
            f"a network, put {expected} there and set data.download=false"
        ) from None
    sys.stdout.write(said.getvalue())
    return train, test


def _innermost(exc: BaseException) -> str:
    """The last line of the deepest cause of ``exc``: a download's socket error, say, or the
    last mirror's error in torchvision's list of the mirrors it tried."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _load_idx_dataset(
    cfg: DataConfig, name: str, title: str, dataset_cls: type, mean: float, std: float
) -> ArrayDataset:
    """An MNIST-format data set (IDX files under ``<root>/<ClassName>/raw``)."""
    root = Path(cfg.root).expanduser()
    train, test = _splits(
        cfg,
        title,
        root,
        f"{dataset_cls.__name__}/raw",
        lambda train: dataset_cls(str(root), train=train, download=cfg.download),
    )
    return ArrayDataset(
        name,
        train.data.numpy()[:, None, :, :],
        train.targets.numpy().astype(np.uint8),
        test.data.numpy()[:, None, :, :],
        test.targets.numpy().astype(np.uint8),
        num_classes=10,
        normalisation=PixelNormalisation(255.0, mean, std),
    )


def load_mnist_dataset(cfg: DataConfig) -> ArrayDataset:
    """MNIST through torchvision from ``cfg.root`` (downloads only if ``cfg.download``)."""
    from torchvision.datasets import MNIST

    return _load_idx_dataset(cfg, "mnist", "MNIST", MNIST, MNIST_MEAN, MNIST_STD)


def load_fashion_mnist_dataset(cfg: DataConfig) -> ArrayDataset:
    """Fashion-MNIST through torchvision: MNIST's format under ``<root>/FashionMNIST/raw``."""
    from torchvision.datasets import FashionMNIST

    return _load_idx_dataset(
        cfg, "fashion_mnist", "Fashion-MNIST", FashionMNIST, FASHION_MNIST_MEAN, FASHION_MNIST_STD
    )


@functools.cache
def _existence_checked_datasets() -> dict[str, type]:
    """torchvision's CIFAR-10, CIFAR-100 and SVHN, accepting any files in the right format.

    With ``download=False`` torchvision md5-checks the files against the official archives, so
    a correctly formatted file with other contents (a re-encoded copy, a small test fixture)
    is rejected as "not found or corrupted". These subclasses only check that the expected
    files exist and keep torchvision's parsing. Nothing is lost for downloaded data: the
    archive's checksum is still verified when torchvision downloads it, and a download
    happens only when the files are missing (as torchvision's MNIST already behaves).
    Built on first use so that importing the registry does not import torchvision (~1 s).
    """
    from torchvision.datasets import CIFAR10, CIFAR100, SVHN

    def cifar_files_exist(dataset) -> bool:
        folder = os.path.join(dataset.root, dataset.base_folder)
        names = [name for name, _ in dataset.train_list + dataset.test_list]
        return all(
            os.path.isfile(os.path.join(folder, name))
            for name in names + [dataset.meta["filename"]]
        )

    class ExistenceCheckedCIFAR10(CIFAR10):
        """CIFAR-10 whose integrity check is the files' existence (no md5 pass per load)."""

        meta = {**CIFAR10.meta, "md5": None}  # _load_meta md5-checks the label names file too
        _check_integrity = cifar_files_exist

    class ExistenceCheckedCIFAR100(CIFAR100):
        """CIFAR-100 whose integrity check is the files' existence."""

        meta = {**CIFAR100.meta, "md5": None}
        _check_integrity = cifar_files_exist

    class ExistenceCheckedSVHN(SVHN):
        """SVHN whose integrity check is the files' existence."""

        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

        def download(self) -> None:
            # torchvision's SVHN re-downloads over a present file whose md5 differs.
            if not self._check_integrity():
                super().download()

    return {
        "cifar10": ExistenceCheckedCIFAR10,
        "cifar100": ExistenceCheckedCIFAR100,
        "svhn": ExistenceCheckedSVHN,
    }


def _load_cifar_dataset(
    cfg: DataConfig, name: str, title: str, num_classes: int, mean: float, std: float
) -> ArrayDataset:
    """CIFAR-10 or CIFAR-100 (python pickle batches) as ``uint8`` NCHW arrays."""
    dataset_cls = _existence_checked_datasets()[name]
    root = Path(cfg.root).expanduser()
    train, test = _splits(
        cfg,
        title,
        root,
        getattr(dataset_cls, "base_folder", name),
        lambda train: dataset_cls(str(root), train=train, download=cfg.download),
    )

    def nchw(split) -> np.ndarray:  # torchvision keeps CIFAR as NHWC for PIL
        return np.ascontiguousarray(split.data.transpose(0, 3, 1, 2), dtype=np.uint8)

    def labels(split) -> np.ndarray:
        return np.asarray(split.targets, dtype=np.uint8)

    return ArrayDataset(
        name,
        nchw(train),
        labels(train),
        nchw(test),
        labels(test),
        num_classes=num_classes,
        normalisation=PixelNormalisation(255.0, mean, std),
    )


def load_cifar10_dataset(cfg: DataConfig) -> ArrayDataset:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (downloads only if ``cfg.download``)."""
    return _load_cifar_dataset(cfg, "cifar10", "CIFAR-10", 10, CIFAR10_MEAN, CIFAR10_STD)


def load_cifar100_dataset(cfg: DataConfig) -> ArrayDataset:
    """CIFAR-100 with its 100 fine labels from ``<root>/cifar-100-python``."""
    return _load_cifar_dataset(cfg, "cifar100", "CIFAR-100", 100, CIFAR100_MEAN, CIFAR100_STD)


def load_svhn_dataset(cfg: DataConfig) -> ArrayDataset:
    """SVHN's cropped digits (``train_32x32.mat``, ``test_32x32.mat`` directly in ``cfg.root``).

    The ``extra`` split is not used. torchvision already maps SVHN's label 10 to digit 0 and
    transposes the ``(H, W, C, N)`` MATLAB arrays to ``(N, C, H, W)``.
    """
    svhn_cls = _existence_checked_datasets()["svhn"]
    root = Path(cfg.root).expanduser()
    train, test = _splits(
        cfg,
        "SVHN",
        root,
        "train_32x32.mat and test_32x32.mat",
        lambda train: svhn_cls(
            str(root), split="train" if train else "test", download=cfg.download
        ),
    )

    def images(split) -> np.ndarray:
        return np.ascontiguousarray(split.data, dtype=np.uint8)

    def labels(split) -> np.ndarray:
        return np.asarray(split.labels, dtype=np.uint8)

    return ArrayDataset(
        "svhn",
        images(train),
        labels(train),
        images(test),
        labels(test),
        num_classes=10,
        normalisation=PixelNormalisation(255.0, SVHN_MEAN, SVHN_STD),
    )


def is_torchvision_class(obj: Any) -> bool:
    """Whether ``obj`` is one of torchvision's data set classes (``torchvision.datasets``);
    checked without importing torchvision unless the object comes from it."""
    if not (isinstance(obj, type) and obj.__module__.startswith("torchvision.")):
        return False
    from torchvision.datasets import VisionDataset

    return issubclass(obj, VisionDataset)


def load_torchvision_class(cfg: DataConfig) -> ArrayDataset:
    """A torchvision data set named by its class (``data.target:
    torchvision.datasets:KMNIST``), read from ``data.root`` (downloaded there only with
    ``data.download``), its training and test splits chosen by ``train=`` or ``split=`` as
    the class takes them; ``data.args`` are passed on.

    Image classes that hold their images as one array (``data``, with ``targets`` or
    ``labels``) are kept as ``uint8`` NCHW, normalised by the training pixels' mean and
    standard deviation (one scalar pair); any other class is read item by item through
    ``ToTensor`` (:func:`from_torch_datasets`)."""
    import inspect

    from torchvision.transforms import ToTensor

    from fpzo_ray.data.arrays import from_torch_datasets
    from fpzo_ray.registry import import_target

    cls = import_target(cfg.target)
    takes = inspect.signature(cls).parameters
    args = dict(cfg.args or {})
    root = Path(cfg.root).expanduser()
    if "download" in takes:
        args["download"] = cfg.download

    def split(train: bool) -> Any:
        if "train" in takes:
            return cls(str(root), train=train, **args)
        if "split" in takes:
            return cls(str(root), split="train" if train else "test", **args)
        raise ValueError(
            f"data.target: {cfg.target} takes neither train= nor split=: load it with a "
            "loader of your own (docs/EXTENDING.md)"
        )

    train, test = _splits(cfg, cls.__name__, root, f"{cls.__name__}'s files", split)
    arrays = [_image_arrays(s) for s in (train, test)]
    if arrays[0] is None or arrays[1] is None:
        train.transform = test.transform = ToTensor()
        return from_torch_datasets(train, test, name=cfg.target)
    (x_train, y_train), (x_test, y_test) = arrays[0], arrays[1]
    pixels = x_train.astype(np.float32) / 255.0
    return check_array_dataset(
        ArrayDataset(
            cfg.target,
            x_train,
            y_train,
            x_test,
            y_test,
            num_classes=int(max(y_train.max(), y_test.max())) + 1,
            normalisation=PixelNormalisation(255.0, float(pixels.mean()), float(pixels.std())),
        )
    )


def _image_arrays(split: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(uint8 NCHW images, int64 labels)`` of a torchvision split that holds them as arrays
    (MNIST's family: ``(N, H, W)``; CIFAR's: ``(N, H, W, C)``; SVHN's: ``(N, C, H, W)``)."""
    labels = getattr(split, "targets", getattr(split, "labels", None))
    data = getattr(split, "data", None)
    if data is None or labels is None:
        return None
    images = np.asarray(data)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        return None
    if images.ndim == 3:
        images = images[:, None]
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def load_dataset(cfg: DataConfig) -> ArrayDataset:
    """The data set ``data.target`` loads (a researcher's loader, called with ``data.args``,
    or a torchvision data set class: :func:`load_torchvision_class`), or else the registered
    data set ``data.name`` (``fpzo_ray.registry.DATASETS``)."""
    if cfg.target:
        from fpzo_ray.registry import import_target

        if is_torchvision_class(import_target(cfg.target)):
            return load_torchvision_class(cfg)
        return load_target_dataset(cfg.target, cfg.args or {})
    return DATASETS.load(cfg.name)(cfg)


__all__ = [
    "ArrayDataset",
    "PixelNormalisation",
    "load_cifar100_dataset",
    "load_cifar10_dataset",
    "load_dataset",
    "load_digits_dataset",
    "load_fashion_mnist_dataset",
    "load_mnist_dataset",
    "load_svhn_dataset",
]
