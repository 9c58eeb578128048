"""Checks that need files, data or a model, run before any work starts.

The configuration validates itself field by field; what it cannot see without loading a data
set, a profiles file or a model (a partition that cannot be built, a missing data set, a
researcher's loader or model that fails, a bad device profile) is checked here, so that such
an error, too, stops before Ray starts, with one line naming the field.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from fpzo_ray.config import ConfigError, RunConfig
from fpzo_ray.data import ArrayDataset, federated_data, load_dataset
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.protocol import zo_update_spec
from fpzo_ray.sim.devices import load_catalog
from fpzo_ray.task import build_task
from fpzo_ray.zo.layerwise import blocks_for

PREFLIGHT_TIMEOUT_ENV = "FPZO_PREFLIGHT_TIMEOUT_S"
DEFAULT_PREFLIGHT_TIMEOUT_S = 600.0


def preflight(configs: Sequence[RunConfig]) -> None:
    """Raise :class:`ConfigError` for the first configuration that cannot run."""
    datasets: dict[str, ArrayDataset] = {}
    seen: set[tuple[str, ...]] = set()
    for cfg in configs:
        if cfg.devices.enabled:
            load_catalog(cfg.devices.profiles_file or None, cfg.devices.population)
        data = repr(cfg.data)  # its args (a dict) make the section unhashable
        if data not in datasets:
            with time_limit("data.target" if cfg.data.target else "data.name", cfg.data_name):
                datasets[data] = _load(cfg)
        if (data, str(cfg.seed)) not in seen:
            seen.add((data, str(cfg.seed)))
            federated_data(cfg, datasets[data])
        model = (data, repr(cfg.model), cfg.zo.perturbation_scope)
        if model not in seen:
            seen.add(model)
            with time_limit("model.target" if cfg.model.target else "model.name", cfg.model_name):
                _try_model(cfg, datasets[data])


@contextlib.contextmanager
def time_limit(field: str, target: str) -> Iterator[None]:
    """A :class:`ConfigError` naming ``field`` and ``target`` when the block (a data set
    loaded, a model built and run: possibly a researcher's code) takes longer than
    ``$FPZO_PREFLIGHT_TIMEOUT_S`` (default 600 s): one that hangs must not hold the command
    forever. An interval timer's signal interrupts Python code, ``time.sleep`` and most
    waits; on a thread other than the main one (where signals cannot go) there is no limit."""
    limit = float(os.environ.get(PREFLIGHT_TIMEOUT_ENV) or DEFAULT_PREFLIGHT_TIMEOUT_S)
    if threading.current_thread() is not threading.main_thread() or limit <= 0:
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise ConfigError(
            f"config error: {field}: {target} did not finish within {limit:g} s "
            f"({PREFLIGHT_TIMEOUT_ENV}): does it hang?"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _load(cfg: RunConfig) -> ArrayDataset:
    """The data set, or one line naming the field: a missing file, or a researcher's loader
    that raises or returns something else than a data set."""
    try:
        return load_dataset(cfg.data)
    except FileNotFoundError as exc:
        raise ConfigError(f"config error: {exc}") from None
    except ConfigError:
        raise  # already one line (a time limit, say)
    except Exception as exc:  # noqa: BLE001 - a researcher's loader may raise anything
        if not cfg.data.target:
            raise
        raise ConfigError(_raised("data.target", cfg.data.target, exc)) from None


def _try_model(cfg: RunConfig, dataset: ArrayDataset) -> None:
    """Build the model and run it on two training inputs, as every actor will: a model that
    cannot be built, does not accept the data or cannot run the configured ZO variant stops
    here, before Ray starts."""
    field = "model.target" if cfg.model.target else "model.name"
    try:
        model = build_model(cfg, dataset.input_shape, dataset.num_classes, init_seed=0)
        flat, layout = bind_flat_buffer(model)
        inputs, targets = dataset.train_batch(np.arange(min(2, dataset.num_train)))
        with torch.no_grad():
            logits = model(inputs)
        if not isinstance(logits, torch.Tensor):
            raise ValueError(
                f"returns a {type(logits).__name__}, not a tensor of outputs (wrap a model "
                "that returns an output object, e.g. Hugging Face's, to return its logits)"
            )
        if logits.shape[-1] != dataset.num_classes:
            raise ValueError(
                f"returns {logits.shape[-1]} outputs a sample, the data has "
                f"{dataset.num_classes} classes"
            )
    except ConfigError:
        raise  # already one line (a time limit, say)
    except Exception as exc:  # noqa: BLE001 - a researcher's model may raise anything
        raise ConfigError(_raised(field, cfg.model_name, exc)) from None
    _try_task(cfg, logits, targets)
    if cfg.training.algorithm != "bp":
        _check_step_size(cfg, flat.numel())
    try:  # the layer-wise variant needs a chain of stages
        blocks_for(zo_update_spec(cfg, clip_on_client=False), model, layout, None)
    except ValueError as exc:
        raise ConfigError(f"config error: {exc}") from None


def _try_task(cfg: RunConfig, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """The task's loss and metrics on the model's outputs for two training samples: a loss
    that does not fit the targets (cross-entropy on real values, say) stops here."""
    if cfg.task.loss == "cross_entropy" and targets.is_floating_point():
        raise ConfigError(
            "config error: task.loss: cross_entropy needs integer class labels and the data "
            f"set's targets are real numbers {tuple(targets.shape[1:])} a sample (set "
            "task.loss: mse for regression, bce_with_logits for multi-label)"
        )
    task = build_task(cfg.task.loss, cfg.task.metrics)
    try:
        losses = task.loss(outputs, targets)
        if losses.shape != (targets.shape[0],) or not bool(torch.isfinite(losses).all()):
            raise ValueError(f"gave {losses.tolist()} for {targets.shape[0]} samples")
    except Exception as exc:  # noqa: BLE001 - a loss of the wrong kind may raise anything
        raise ConfigError(
            _raised("task.loss", cfg.task.loss, exc, _shapes(outputs, targets))
        ) from None
    for key, metric in task.metrics.items():
        try:
            value = metric(outputs, targets)
            float(value)
        except Exception as exc:  # noqa: BLE001 - a researcher's metric may raise anything
            raise ConfigError(
                _raised("task.metrics", key, exc, _shapes(outputs, targets))
            ) from None


def _shapes(outputs: torch.Tensor, targets: torch.Tensor) -> str:
    return (
        f" (on outputs {tuple(outputs.shape)} {outputs.dtype} and targets "
        f"{tuple(targets.shape)} {targets.dtype})"
    )


#: Lower bounds on a ZO step's work on any device, generous by far, so that only a step that
#: certainly cannot end in time is refused: a forward pass of a mini-batch takes at least a
#: microsecond (a GPU kernel launch alone takes several; a CPU pass of the digits CNN, tens),
#: and no device draws more than 1e10 direction numbers a second (the compiled Philox fill
#: took 0.12-0.36 ns a number on one core).
LEAST_PASS_S = 1e-6
MOST_NUMBERS_PER_S = 1e10


def _check_step_size(cfg: RunConfig, weights: int) -> None:
    """Refuse a round whose ZO work cannot end within ``simulation.round_timeout_s`` on any
    device (``zo.num_perturbations: 1e9`` would otherwise wait out the limit, fail every
    client and then the run, hours later). A worker's share of a round is its clients' steps
    one after another, each K + 1 forward passes and K directions of d numbers; counted at
    :data:`LEAST_PASS_S` and :data:`MOST_NUMBERS_PER_S`, with d the weights left at the
    configured sparsity (fewer than are trained, never more)."""
    K = cfg.zo.num_perturbations
    trained = max(1, int(weights * (1.0 - cfg.pruning.sparsity)))
    steps = cfg.training.local_steps if cfg.training.mode == "fedavg" else 1
    workers = cfg.simulation.num_workers or cfg.training.clients_per_round  # 0: unknown yet
    clients = -(-cfg.training.clients_per_round // workers)
    least_s = clients * steps * ((K + 1) * LEAST_PASS_S + K * trained / MOST_NUMBERS_PER_S)
    limit_s = cfg.simulation.round_timeout_s
    if least_s > limit_s:
        raise ConfigError(
            f"config error: zo.num_perturbations: {K} directions for {clients} client(s) a "
            f"worker, {steps} step(s) each, over {trained:,} weights take at least "
            f"{least_s:.3g} s a round on any device, more than simulation.round_timeout_s "
            f"({limit_s:g} s)"
        )


def _raised(field: str, target: str, exc: Exception, context: str = "") -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    prefix = f"{field}: "
    if first.startswith(prefix):  # already says which field
        return f"config error: {first}{context}"[:400]
    return f"config error: {field}: {target}: {type(exc).__name__}: {first}{context}"[:400]
