"""The data set registry: every loader returns an :class:`ImageDataset`.

Images are kept as raw ``uint8`` arrays and normalised batch by batch. That keeps the
footprint small (MNIST's training set is 47 MB instead of 188 MB) and lets Ray share one copy
through its object store with zero-copy reads by every worker actor on a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fpzo_ray.config import DataConfig


@dataclass(frozen=True)
class ImageDataset:
    """A train/test split of images with integer labels.

    ``train_images`` has shape ``(N, C, H, W)`` and dtype ``uint8``; a pixel ``p`` becomes
    ``(p / pixel_max - mean) / std`` when a batch is built.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    pixel_max: float
    mean: float
    std: float

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_train(self) -> int:
        return int(self.train_labels.shape[0])

    def normalise(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        return (x / self.pixel_max - self.mean) / self.std

    def train_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels of the given training indices (a copy)."""
        labels = torch.from_numpy(self.train_labels[indices].astype(np.int64))
        return self.normalise(self.train_images[indices]), labels

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.from_numpy(self.test_labels.astype(np.int64))
        return self.normalise(self.test_images), labels


def load_digits_dataset(cfg: DataConfig) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, no network).

    The held-out test split is fixed (stratified, 20 %, random_state 0) so that runs with
    different seeds are evaluated on the same images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.2,
                                              stratify=labels, random_state=0)
    pixels = x_tr.astype(np.float64) / 16.0
    return ImageDataset("digits", x_tr, y_tr, x_te, y_te, num_classes=10, pixel_max=16.0,
                        mean=float(pixels.mean()), std=float(pixels.std()))


def load_mnist_dataset(cfg: DataConfig) -> ImageDataset:
    """MNIST through torchvision from ``cfg.root`` (downloads only if ``cfg.download``)."""
    from torchvision.datasets import MNIST

    root = Path(cfg.root).expanduser()
    try:
        train = MNIST(str(root), train=True, download=cfg.download)
        test = MNIST(str(root), train=False, download=cfg.download)
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"data.root: MNIST not found under {root}; point data.root at a folder "
            "holding MNIST/raw, or set data.download=true") from None
    return ImageDataset(
        "mnist",
        train.data.numpy()[:, None, :, :], train.targets.numpy().astype(np.uint8),
        test.data.numpy()[:, None, :, :], test.targets.numpy().astype(np.uint8),
        num_classes=10, pixel_max=255.0, mean=0.1307, std=0.3081)


DATASET_LOADERS: dict[str, Callable[[DataConfig], ImageDataset]] = {
    "digits": load_digits_dataset,
    "mnist": load_mnist_dataset,
}


def load_dataset(cfg: DataConfig) -> ImageDataset:
    return DATASET_LOADERS[cfg.name](cfg)
