"""CIFAR-shaped inputs (3 x 32 x 32) without CIFAR: the bundled 8 x 8 digits, upsampled
(nearest) and repeated over three channels, for trying an ImageNet-style torchvision model
on this machine. With CIFAR-10 on disk, use it instead: ``--set data.target= --set
data.name=cifar10 --set data.root=/path/to/cifar`` (the model needs no change)."""

from __future__ import annotations

import dataclasses

import numpy as np

from fpzo_ray.config import DataConfig
from fpzo_ray.data import ArrayDataset, load_dataset


def load(side: int = 32) -> ArrayDataset:
    digits = load_dataset(DataConfig(name="digits"))
    scale = side // digits.input_shape[-1]

    def upsampled(images: np.ndarray) -> np.ndarray:
        big = images.repeat(scale, axis=-2).repeat(scale, axis=-1)
        return np.ascontiguousarray(np.repeat(big, 3, axis=1))

    return dataclasses.replace(
        digits,
        name="digits_3x32x32",
        train_inputs=upsampled(digits.train_inputs),
        test_inputs=upsampled(digits.test_inputs),
    )
