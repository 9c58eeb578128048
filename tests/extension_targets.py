"""A researcher's components, one per extension point, named by import path in the tests of
``test_extensions.py`` (``extension_targets:<name>``), plus wrong ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fpzo_ray.data import from_arrays
from fpzo_ray.optim.server import ServerSettings
from fpzo_ray.pruning.methods import SaliencyInputs
from fpzo_ray.sim.callbacks import RunCallback
from fpzo_ray.zo.algorithms.fedsgd import ZOFedSGD
from fpzo_ray.zo.difference import DifferenceScheme


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 16) -> nn.Module:
    features = int(np.prod(input_shape))
    return nn.Sequential(
        nn.Flatten(), nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, num_classes)
    )


def blobs(samples: int = 300, features: int = 6, classes: int = 3, seed: int = 0) -> Any:
    """Gaussian blobs, one per class, as (train, test) arrays."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (classes, features))
    y = rng.integers(0, classes, samples)
    x = (centres[y] + rng.normal(0, 1, (samples, features))).astype(np.float32)
    cut = samples * 4 // 5
    return from_arrays(train=(x[:cut], y[:cut]), test=(x[cut:], y[cut:]), name="blobs")


def two_label_halves(labels: np.ndarray, cfg: Any, rng: np.random.Generator) -> list[np.ndarray]:
    """Clients cut from the samples sorted by label: a label-skewed partition."""
    order = np.argsort(labels, kind="stable")
    return [np.sort(part) for part in np.array_split(order, cfg.num_clients)]


def squared_magnitude(inputs: SaliencyInputs, power: float = 2.0) -> torch.Tensor:
    """|w|^power at the prunable coordinates (higher = keep), zero where pruned."""
    weights = inputs.initial_weights[inputs.layout.prunable_positions()].abs() ** power
    return weights * inputs.mask.prunable_kept


ONE_SIDED = DifferenceScheme(
    "one_sided", signs=(1.0, 2.0), weights=(4.0, -1.0), base_weight=-3.0, span=2.0
)


def fill_uniform(out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform on [-sqrt 3, sqrt 3]: E[z z^T] = I, like the registered kinds."""
    return out.uniform_(-(3**0.5), 3**0.5, generator=generator)


def adagrad(params: list[nn.Parameter], settings: ServerSettings) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=settings.lr)


class MedianFedSGD(ZOFedSGD):
    """ZO FedSGD whose server takes the coordinate-wise median of the estimates."""

    label = "ZO (median)"
    aggregated_rounds = 0

    def aggregate(self, contributions, num_samples):  # type: ignore[no-untyped-def]
        type(self).aggregated_rounds += 1
        return torch.stack(list(contributions)).median(dim=0).values


def needs_a_name(name: str) -> nn.Module:  # wrong signature for model.target
    raise AssertionError("never called")


def raises_on_build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    raise RuntimeError("my model cannot be built")


NOT_A_FUNCTION = 3


class NotAnAlgorithm:
    pass


# -- components that compute nothing usable: a run must fail, never end FINISHED ------------
def nan_scores(inputs: SaliencyInputs) -> torch.Tensor:
    return torch.full((inputs.layout.num_prunable,), float("nan"))


def list_scores(inputs: SaliencyInputs) -> list[float]:
    return [1.0] * inputs.layout.num_prunable


def fill_nan(out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return out.fill_(float("nan"))


def exploding(params: list[nn.Parameter], settings: ServerSettings) -> torch.optim.Optimizer:
    """A server optimizer whose first step leaves no weight finite."""
    return torch.optim.SGD(params, lr=float("inf"))


def fill_hangs(out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Directions that never come: a client's work that hangs."""
    import time

    time.sleep(3600)
    return out


def bn_cnn(
    input_shape: tuple[int, ...], num_classes: int, width: int = 8, shift: float = 0.0
) -> nn.Module:
    """Two convolutions with BatchNorm (running statistics, as torchvision's models keep);
    ``shift``: the convolutions' initial bias, an offset of the activations' means such as a
    deep network's layers have."""
    channels, height, width_px = input_shape
    model = nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * height * width_px, num_classes),
    )
    with torch.no_grad():
        model[0].bias.fill_(shift)
        model[3].bias.fill_(shift)
    return model


def dropout_mlp(input_shape: tuple[int, ...], num_classes: int, p: float = 0.5) -> nn.Module:
    features = int(np.prod(input_shape))
    return nn.Sequential(
        nn.Flatten(), nn.Linear(features, 32), nn.Tanh(), nn.Dropout(p), nn.Linear(32, num_classes)
    )


def _without_last_layer(layout, density, gen, reference, layer_scope):  # noqa: ANN001
    """A direct mask that prunes the last prunable layer whole (collapse) and nothing else."""
    from fpzo_ray.pruning import Mask

    kept = torch.ones(layout.num_prunable, dtype=torch.bool)
    last = layout.prunable_slots[-1]
    kept[kept.numel() - last.numel :] = False
    return Mask(layout, kept)


def _collapsing_method() -> Any:
    from fpzo_ray.pruning.methods import PruningMethod

    return PruningMethod("drops the classifier", direct=_without_last_layer)


DROPS_THE_CLASSIFIER = _collapsing_method()


def _nan_on_clients() -> Any:
    from fpzo_ray.pruning.methods import ClientSaliency, PruningMethod

    return PruningMethod("NaN on clients", client=ClientSaliency(nan_scores))


#: A federated saliency (each sampled client computes it) that gives NaN.
NAN_ON_CLIENTS = _nan_on_clients()


def linear_regression(
    samples: int = 400, features: int = 5, outputs: int = 1, seed: int = 0
) -> Any:
    """Real targets ``x @ w + noise``: ``(N,)`` for one output, ``(N, outputs)`` otherwise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (samples, features)).astype(np.float32)
    w = rng.normal(0, 1, (features, outputs))
    y = (x @ w + 0.1 * rng.normal(0, 1, (samples, outputs))).astype(np.float32)
    y = y[:, 0] if outputs == 1 else y
    cut = samples * 4 // 5
    return from_arrays(train=(x[:cut], y[:cut]), test=(x[cut:], y[cut:]), name="regression")


def multi_label(samples: int = 400, features: int = 6, labels: int = 3, seed: int = 0) -> Any:
    """0/1 targets ``(N, labels)``: label j is on when feature j is positive (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (samples, features)).astype(np.float32)
    y = (x[:, :labels] > 0).astype(np.float32)
    cut = samples * 4 // 5
    return from_arrays(train=(x[:cut], y[:cut]), test=(x[cut:], y[cut:]), name="multi_label")


def error_rate(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The share of samples whose arg-max output is not the class: a metric of one's own."""
    return float((outputs.argmax(1) != targets).float().mean())


def summed_squares(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss of one's own that reduces the batch itself (refused: one value per sample)."""
    return ((outputs.squeeze(-1) - targets) ** 2).sum()


def verdict(outputs: torch.Tensor, targets: torch.Tensor) -> str:
    """A metric that returns words, not a number (refused)."""
    return "fine"


class UploadKibAndStop(RunCallback):
    """A researcher's run callback: a per-round metric of its own, and an early stop once
    the global model was evaluated twice."""

    def __init__(self) -> None:
        self.evaluations = 0

    def on_round(self, metrics: dict[str, Any]) -> bool:
        metrics["upload_kib"] = metrics["round_upload_bytes"] / 1024
        self.evaluations += "test_accuracy" in metrics
        return self.evaluations >= 2


class NeedsAnArgument(RunCallback):
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
