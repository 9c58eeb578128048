"""One validated, frozen configuration for a federated run: every default lives here.

A configuration is built from nested plain dicts (YAML) by :func:`config_from_dict`. Every key
is checked against the dataclass fields (unknown keys are errors, so a typo never silently
falls back to a default), every value against its type and its allowed range or choices. The
first problem raises :class:`ConfigError` whose one-line message names the dotted field, the
value it got and what is allowed; the command-line entry points turn it into exit code 2
before any work starts.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
import types
import typing
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fpzo_ray import registry  # plain data: imports no torch

DATASETS = registry.DATASETS.names
MODELS = ("auto", *registry.MODELS.names)
PARTITIONS = registry.PARTITIONERS.names
PRUNING_METHODS = registry.PRUNING_METHODS.names
PRUNING_SCOPES = ("global", "layer")
INIT_SCALINGS = ("fan_in", "none")
DRAW_INITS = ("model", "kaiming_normal")
REFERENCE_METHODS = tuple(
    m for m in PRUNING_METHODS if registry.PRUNING_METHODS.info(m, "reference", True)
)
ALGORITHMS = tuple(registry.ALGORITHMS)  # their modes are checked in _cross_check
MODES = tuple(dict.fromkeys(m for modes in registry.ALGORITHMS.values() for m in modes))
ESTIMATORS = registry.DIFFERENCE_SCHEMES.names
DIRECTIONS = registry.DIRECTION_KINDS.names
GENERATORS = registry.DIRECTION_GENERATORS
PERTURBATION_SCOPES = ("full", "layerwise")
BATCHINGS = ("auto", "loop", "vmap", "batched")
#: ``zo.dropout``: what a model's dropout does in the forward passes of a ZO difference
#: (``fpzo_ray.zo.dropout``).
ZO_DROPOUTS = ("off", "same_mask", "independent")
SERVER_OPTIMIZERS = registry.SERVER_OPTIMIZERS.names
NORMS = ("group", "none", "batch")
#: ``model.buffers``: how the global model's running statistics (BatchNorm's) are kept
#: (``models.statistics``).
BUFFER_POLICIES = ("aggregate", "recalibrate", "batch_stats", "local")
ACTIVATIONS = ("hardswish", "relu")
#: ``task.loss`` by name (``fpzo_ray.task.losses.NAMED_LOSSES``).
LOSSES = ("cross_entropy", "mse", "bce_with_logits", "token_cross_entropy")
#: ``task.metrics`` by name (``fpzo_ray.task.metrics.NAMED_METRICS``).
METRICS = ("accuracy", "macro_f1")
#: Named losses whose task has classes: ``task.metrics: auto`` reports accuracy for them.
CLASSIFICATION_LOSSES = ("cross_entropy", "token_cross_entropy", "bce_with_logits")
DEVICES = ("cpu", "cuda")
WORKER_FAILURE_POLICIES = ("retry", "drop")
PLACEMENTS = ("pack", "spread")
MEMORY_FIGURES = ("sparse", "dense")
ESTIMATE_PLACES = ("workers", "server")


#: Limits on what a configuration or sweep file may be: far above any real one, low enough
#: that a hostile file is refused before it costs memory, time or a stack overflow.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
#: Values (scalars, lists, mappings) a document may hold once its aliases are expanded: a
#: sweep of 10^6 trials (a 1,000 x 1,000 grid) is written with about 2,000; a 342-byte
#: "billion laughs" alias bomb expands to 10^9.
MAX_NODES = 100_000
#: Integers are 64-bit everywhere they go (seeds, counts, torch, numpy).
INT_RANGE = (-(2**63), 2**63 - 1)
#: Numbers feed float32 tensors (weights, perturbations, rates): past this they are infinite
#: there, and a nonzero value below the smallest float32 is 0.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.401298464324817e-45
#: Ray counts fractional resources in steps of this size; a smaller fraction is an error
#: once Ray has started.
RAY_RESOURCE_STEP = 1e-4


#: The type of every ``args`` field: keyword arguments of a component, checked by it.
ARGS_TYPE = dict[str, Any] | None


_NULL, _MERGE = "tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """A document the loader refuses to compose; the message says why, without the file."""


class _Loader(yaml.SafeLoader):
    """A safe YAML loader that measures the document while composing it.

    An alias is the node its anchor composed, not a copy, so a few hundred bytes of nested
    aliases can stand for 10^9 values: every later walk (validation, merging, saving) would
    expand them. Each composed node's expanded size (1 + its children's) and height are
    computed once and memoised by node, so measuring is linear in the document's text, and
    a document is refused as soon as any node expands past ``MAX_NODES`` values or sits more
    than ``MAX_DEPTH`` collections deep (checked before descending: a deep document never
    reaches the recursion limit). An alias met while its anchor is still being composed is
    recursive (an infinite value) and refused. Merge keys (``<<``) cannot escape the limit:
    a merge replaces the measured alias by the anchored mapping's pairs, never more.

    Duplicate keys in a mapping are refused (YAML forbids them; PyYAML keeps the last
    silently, so ``rounds: 5`` then ``rounds: 7`` would run 7 rounds unnoticed). Keys are
    compared as resolved scalars (tag and text), before merge keys are expanded: a key
    overriding a merged one is not a duplicate.

    Scalars are resolved by YAML 1.2's core schema (below): ``1e-4`` is a number.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._measured: dict[yaml.Node, tuple[int, int]] = {}  # node -> (size, height)
        self._level = 0  # collections enclosing the node being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            anchored = self.anchors.get(event.anchor)
            if anchored is not None and anchored not in self._measured:
                raise _Refused(
                    f"recursive alias *{event.anchor} (line {event.start_mark.line + 1})"
                )
            node = super().compose_node(parent, index)  # an undefined alias raises here
        else:
            collection = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
            if collection and self._level >= MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
            self._level += collection
            try:
                node = super().compose_node(parent, index)
            finally:
                self._level -= collection
            assert node is not None
            self._measure(node)
        assert node is not None
        size, height = self._measured[node]
        if size > MAX_NODES:
            raise _Refused(f"holds more than {MAX_NODES} values once its aliases are expanded")
        if self._level + height > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
        return node

    def _measure(self, node: yaml.Node) -> None:
        """Memoise a freshly composed node's expanded size and height; refuse duplicate keys."""
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
            seen: set[tuple[str, str]] = set()
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue  # an unhashable key: refused when constructed
                if (key.tag, key.value) in seen:
                    raise _Refused(
                        f"duplicate key {show(key.value)} (line {key.start_mark.line + 1})"
                    )
                seen.add((key.tag, key.value))
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            self._measured[node] = (1, 0)
            return
        sizes = [self._measured[child] for child in children]
        self._measured[node] = (
            1 + sum(size for size, _ in sizes),
            1 + max((height for _, height in sizes), default=0),
        )


# Plain scalars are read by YAML 1.2's core schema, not PyYAML's YAML 1.1: there ``010`` is
# octal 8, ``1:30`` the sexagesimal 90, ``1_000`` a thousand, ``yes``/``off`` booleans and
# ``2026-12-06`` a date, all silently. Here they are 10, and strings that a number or
# boolean field refuses by name. Only null and the merge key (``<<``) keep PyYAML's rules.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag in (_NULL, _MERGE)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
):
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


def _core_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    """A YAML 1.2 core integer: decimal (leading zeros included), ``0o`` octal, ``0x`` hex."""
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    base = {"0o": 8, "0x": 16}.get(text[:2], 10)
    return int(text[2:] if base != 10 else text, base)


_Loader.add_constructor("tag:yaml.org,2002:int", _core_int)


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line error messages (a hostile value
    may be a 400-digit integer or a huge mapping)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML; anything unreadable, too large once its aliases are expanded, too deeply
    nested or holding a duplicate key is a one-line :class:`ConfigError` about ``where``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise ConfigError(f"config error: {where}: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config error: {where}: not valid YAML ({first})") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer too long to convert
        why = (
            "an integer of more than 4300 digits"
            if "integer string conversion" in str(exc)
            else str(exc).splitlines()[0][:80]
        )
        raise ConfigError(f"config error: {where}: cannot be read ({why})") from None


def require_utf8_paths(paths: Mapping[str, str | Path | None]) -> None:
    """Raise :class:`ConfigError` for the first path (keyed by the argument or field that
    gave it; None = not given) that is not valid UTF-8.

    Python hands undecodable command-line bytes over as lone surrogates; the file system
    accepts them, but Ray, MLflow and the YAML files that record paths cannot encode them,
    and would fail after the run had started. The message names the argument, never the
    path itself (it cannot be printed as given).
    """
    for name, path in paths.items():
        if path is None:
            continue
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"config error: {name}: the path is not valid UTF-8") from None


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line naming the field."""


def check_text(where: str, text: str) -> str:
    """``text`` unless it holds a control character (a newline, a NUL, an escape: names end
    up in run names, folder names, MLflow tags and terminal lines, which they would break or
    forge) or a lone surrogate (which no file, database or terminal can encode)."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ConfigError(
                f"config error: {where}: got {show(text)}, must not hold control characters "
                f"({char!r})"
            )
    return text


def refuse_with_resume(flags: Mapping[str, bool]) -> None:
    """``--resume`` continues with the configuration the work started with: a flag that
    would change it (given: True) is refused rather than silently ignored."""
    for flag, given in flags.items():
        if given:
            raise ConfigError(
                f"config error: {flag}: not taken with --resume, which continues with the "
                "configuration the work started with; leave it out (or start anew)"
            )


def setting(
    default: Any,
    *,
    choices: tuple | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    max_len: int | None = None,
    paths: bool = False,
    listed: bool = False,
    doc: str = "",
) -> Any:
    """A dataclass field carrying its own validation rule in its metadata (``max_len``: of a
    string, which must then also be non-empty; ``paths``: besides its ``choices`` the field
    takes an import path ``module:attribute`` naming a researcher's own component;
    ``listed``: a string of comma-separated entries, which a YAML list of strings also gives
    (kept a string so that a sweep's list of values stays a list of choices))."""
    rule = {
        "choices": choices,
        "paths": paths,
        "listed": listed,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "max_len": max_len,
        "doc": doc,
    }
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults: the config is frozen")
    return field(default=default, metadata=rule)


@dataclass(frozen=True)
class DataConfig:
    """``data.*``: the data set, its partition over clients and the validation split."""

    name: str = setting("digits", choices=DATASETS, doc="data set from the registry")
    target: str = setting(
        "",
        doc="your loader as an import path 'module:function', called as function(**args), "
        "or a torchvision data set class ('torchvision.datasets:KMNIST', read from root); "
        "replaces name (docs/EXTENDING.md)",
    )
    args: dict[str, Any] | None = setting(None, doc="keyword arguments of data.target")
    root: str = setting("data", doc="folder holding torchvision data sets (mnist, a class)")
    download: bool = setting(False, doc="let torchvision download a missing data set")
    partition: str = setting(
        "iid", choices=PARTITIONS, paths=True, doc="or your partitioner as 'module:function'"
    )
    alpha: float = setting(0.5, gt=0.0, doc="Dirichlet concentration (partition=dirichlet)")
    shards_per_client: int = setting(2, ge=1, doc="classes-per-client shards (partition=shards)")
    num_clients: int = setting(50, ge=1, doc="size of the virtual client population")
    min_partition_size: int = setting(2, ge=1, doc="fewest training samples a client may hold")
    validation_fraction: float = setting(
        0.1,
        ge=0.0,
        le=0.5,
        doc="seeded, stratified slice of the training pool held out before "
        "partitioning; val_accuracy/val_loss are what searches and schedulers select "
        "on; 0 = none",
    )


@dataclass(frozen=True)
class ModelConfig:
    """``model.*``: the architecture and its ZO-friendly normalisation and activation."""

    name: str = setting(
        "auto",
        choices=MODELS,
        doc="auto: digits_cnn (digits), lenet5 (mnist, fashion_mnist), resnet20",
    )
    target: str = setting(
        "",
        doc="your model as an import path 'module:build', called as "
        "build(input_shape, num_classes, **args) -> nn.Module; replaces name",
    )
    args: dict[str, Any] | None = setting(None, doc="keyword arguments of model.target")
    kwargs: dict[str, Any] | None = setting(
        None,
        doc="model.target called with keywords only, as a zoo's builders are "
        "(torchvision.models:resnet18): these, plus num_classes and input_shape where its "
        "signature takes them",
    )
    buffers: str = setting(
        "aggregate",
        choices=BUFFER_POLICIES,
        doc="running statistics of a model with BatchNorm: aggregate (the clients' own, "
        "averaged by the server), recalibrate (the server's, on validation inputs), "
        "batch_stats (evaluation normalises by each batch's own), local (FedBN: each "
        "client's own, from its data, read by federated evaluation; needs "
        "task.federated_eval_clients)",
    )
    norm: str = setting(
        "group",
        choices=NORMS,
        doc="GroupNorm without affine (BAFFLE), none, or batch (batch statistics)",
    )
    norm_groups: int = setting(2, ge=1)
    activation: str = setting("hardswish", choices=ACTIVATIONS)


@dataclass(frozen=True)
class PruningConfig:
    """``pruning.*``: the foresight-pruning method, its sparsity and schedule."""

    method: str = setting(
        "ntk_sap",
        choices=PRUNING_METHODS,
        paths=True,
        doc="ntk_sap = federated data-free NTK-SAP; or your method as 'module:attribute'; "
        "sparsity 0 means no pruning",
    )
    args: dict[str, Any] | None = setting(None, doc="keyword arguments of your pruning.method")
    sparsity: float = setting(0.0, ge=0.0, lt=1.0, doc="fraction of prunable weights removed")
    scope: str = setting("global", choices=PRUNING_SCOPES, doc="top-k over all layers or per layer")
    reference_method: str = setting(
        "ntk_sap",
        choices=REFERENCE_METHODS,
        doc="random_layerwise copies this mask's per-layer densities",
    )
    init_scaling: str = setting(
        "none",
        choices=INIT_SCALINGS,
        doc="none (the paper's): kept weights start as initialised; fan_in: multiplied by "
        "1/sqrt(their layer's density), so the layer's output variance at initialisation "
        "matches the dense layer's (an ablation: no significant gain once the learning "
        "rate is tuned, see docs/benchmarks.md)",
    )
    iterations: int = setting(
        10, ge=1, doc="T, iterations of the exponential schedule (1 = one-shot)"
    )
    clients_per_iteration: int = setting(10, ge=1)
    draws_per_client: int = setting(
        1, ge=1, doc="R, fresh (input, initialisation) draws per client"
    )
    batch_size: int = setting(16, ge=1, doc="inputs per draw (Gaussian, or local data)")
    epsilon: float = setting(0.01, gt=0.0, doc="weight perturbation scale of the NTK-SAP saliency")
    draw_init: str = setting(
        "model",
        choices=DRAW_INITS,
        doc="initialisation of NTK-SAP's fresh weight draws: model = the model's own "
        "initialiser (the one it is trained from), kaiming_normal = He normal, zero biases",
    )
    allow_collapse: bool = setting(
        False,
        doc="train a mask under which the model's output no longer depends on its input "
        "(layer collapse); by default the run fails (pruning_collapsed)",
    )


@dataclass(frozen=True)
class ZOConfig:
    """``zo.*``: the zeroth-order estimator and how its forward passes run."""

    num_perturbations: int = setting(20, ge=1, doc="K, random directions per client step")
    sigma: float = setting(1e-3, gt=0.0, doc="finite-difference step")
    estimator: str = setting(
        "forward",
        choices=ESTIMATORS,
        paths=True,
        doc="difference scheme: forward (K+1 passes), central (2K passes) or yours as "
        "'module:SCHEME'",
    )
    direction: str = setting(
        "gaussian", choices=DIRECTIONS, paths=True, doc="or yours as 'module:fill_function'"
    )
    generator: str = setting(
        "philox",
        choices=GENERATORS,
        doc="random numbers of the directions: philox (counter-based, the same bits on every "
        "device, drawn where they are used) or torch_cpu (torch's CPU generator: the numbers "
        "of runs made before this setting existed; needed by a direction kind of your own)",
    )
    perturbation_scope: str = setting(
        "full",
        choices=PERTURBATION_SCOPES,
        doc="layerwise: each direction perturbs one block, K split by kept coordinates, "
        "forward resumed from the cached block input",
    )
    batching: str = setting(
        "auto",
        choices=BATCHINGS,
        doc="how the simulator runs a step's K+1 (central: 2K) forward passes (the same "
        "losses to float32 rounding; recorded memory is the device's one-model step in every "
        "mode): auto = the faster of batched and loop for the model; loop = one model at a "
        "time; batched = the perturbed models stacked into one wider pass (grouped "
        "convolutions, batched matrix products; more activation memory); vmap = "
        "torch.func.vmap over the copies",
    )
    chunk_size: int = setting(
        0, ge=0, doc="batched and vmap: models per stacked pass; 0 = all of a step's at once"
    )
    microbatch_size: int = setting(
        0,
        ge=0,
        doc="stream each forward pass through chunks of this many samples (less "
        "activation memory, same loss); 0 = the whole batch at once",
    )
    dropout: str = setting(
        "off",
        choices=ZO_DROPOUTS,
        doc="a model's dropout in the passes of a difference: off (the passes are "
        "deterministic), same_mask (both passes of a difference draw the same mask, seeded "
        "by its direction; central estimator), independent (a fresh mask each pass: the "
        "difference is mostly mask noise)",
    )
    clip_inf_norm: float = setting(0.3, ge=0.0, doc="clamp of the aggregated estimate; 0 = off")


@dataclass(frozen=True)
class TrainingConfig:
    """``training.*``: the federated algorithm, its rounds and its optimizers."""

    algorithm: str = setting(
        "zo",
        choices=ALGORITHMS,
        paths=True,
        doc="zo: BP-free; bp: backprop FedAvg; zo_momentum: ZO FedSGD whose "
        "server steps with a moving average of the estimates; or your FederatedAlgorithm "
        "subclass as 'module:Class' (training.mode is then ignored)",
    )
    args: dict[str, Any] | None = setting(
        None, doc="the algorithm's own hyperparameters (its Params class; docs/EXTENDING.md)"
    )
    mode: str = setting(
        "fedsgd", choices=MODES, doc="fedsgd: one step per round; fedavg: local_steps client steps"
    )
    rounds: int = setting(200, ge=1)
    clients_per_round: int = setting(10, ge=1)
    max_empty_rounds: int = setting(
        3,
        ge=0,
        doc="rounds in a row in which no sampled client's reply could be aggregated (each "
        "failed, was unavailable, out of memory or non-finite) before the run fails; "
        "0 = fail at the first",
    )
    batch_size: int = setting(32, ge=1, doc="client mini-batch per step")
    local_steps: int = setting(1, ge=1, doc="E, client steps per round (fedavg, bp)")
    client_lr: float = setting(0.01, gt=0.0, doc="client SGD learning rate (fedavg, bp)")
    client_momentum: float = setting(0.0, ge=0.0, lt=1.0)
    bp_microbatch_size: int = setting(
        0,
        ge=0,
        doc="BP clients: forward and backward in chunks of this many samples, "
        "gradients accumulated (same update, the activations of one chunk); "
        "0 = the whole batch at once",
    )
    server_optimizer: str = setting(
        "adam", choices=SERVER_OPTIMIZERS, paths=True, doc="or yours as 'module:Class'"
    )
    server_lr: float = setting(0.01, gt=0.0)
    server_momentum: float = setting(0.9, ge=0.0, lt=1.0, doc="for sgd_momentum")
    adam_beta1: float = setting(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = setting(0.99, ge=0.0, lt=1.0)
    ema_decay: float = setting(
        0.0, ge=0.0, lt=1.0, doc="EMA of the server's weights, evaluated instead of them; 0 = off"
    )
    eval_every: int = setting(
        20,
        ge=1,
        doc="score the global model on the whole validation and test splits every N rounds "
        "(and the last): val_* and test_* metrics, what selection and early stopping read",
    )
    eval_subset: int = setting(
        500,
        ge=0,
        doc="every round, score the global model on a fixed stratified sample of this many "
        "validation samples (val_subset_* metrics, a progress signal); 0 = off",
    )
    target_accuracy: float = setting(
        0.0, ge=0.0, le=1.0, doc="report the (simulated) time to reach it; 0 = none"
    )
    callbacks: str = setting(
        "",
        listed=True,
        doc="your run callbacks, comma-separated (or a YAML list) 'module:Class' "
        "subclasses of fpzo_ray.sim.callbacks.RunCallback, built with no arguments: "
        "each round they may add metrics or end the run (docs/EXTENDING.md)",
    )


@dataclass(frozen=True)
class SimulationConfig:
    """``simulation.*``: the actors that run a federation, their resources, checkpoints."""

    num_workers: int = setting(
        2, ge=0, doc="client worker actors per run; 0 = as many as the cluster's CPUs allow"
    )
    worker_cpus: float = setting(0.4, ge=RAY_RESOURCE_STEP, doc="Ray num_cpus of each worker actor")
    worker_gpus: float = setting(0.0, ge=0.0, doc="Ray num_gpus of each worker actor")
    worker_memory_mb: float = setting(
        0.0,
        ge=0.0,
        doc="Ray memory resource of each worker, MB = 10^6 bytes (schedules only); 0 = none",
    )
    server_cpus: float = setting(0.1, ge=RAY_RESOURCE_STEP, doc="Ray num_cpus of the server actor")
    server_gpus: float = setting(
        0.1,
        ge=0.0,
        le=1.0,
        doc="Ray num_gpus of the server actor when simulation.device is cuda (it evaluates, "
        "rebuilds and steps there); 0 = the server runs on the CPU",
    )
    device: str = setting("cpu", choices=DEVICES)
    placement: str = setting(
        "pack", choices=PLACEMENTS, doc="pack a run's actors on few nodes, or spread them"
    )
    on_worker_failure: str = setting(
        "retry",
        choices=WORKER_FAILURE_POLICIES,
        doc="clients of a dead worker: rerun elsewhere, or drop",
    )
    round_timeout_s: float = setting(
        1800.0,
        gt=0.0,
        doc="wall-clock limit on a worker's share of a round (or of a pruning iteration): "
        "its clients then fail as timed out and the worker is replaced; the server's own step "
        "gets as long again before the run fails (round_timeout)",
    )
    compile: bool = setting(
        False,
        doc="torch.compile each worker's forward passes (inductor; compiled once per worker, "
        "cached on disk): faster rounds after seconds of compilation per worker",
    )
    checkpoint_every: int = setting(
        10,
        ge=0,
        doc="rounds between checkpoints of the server state (sweeps and runs "
        "resume from the last one); 0 = off",
    )
    estimate_on: str = setting(
        "workers",
        choices=ESTIMATE_PLACES,
        doc="where the simulator rebuilds a ZO client's estimate (FedSGD) or replays its local "
        "steps (FedAvg): on the worker that ran it, from the very directions it drew, or "
        "on the server from the uploaded scalars and seeds; bit-identical either way, the "
        "workers are faster; bytes are counted as the protocol sends them",
    )


@dataclass(frozen=True)
class DevicesConfig:
    """``devices.*``: device profiles, their population mix and the round deadline."""

    enabled: bool = setting(False, doc="give clients device profiles: budgets, clock, dropouts")
    profiles_file: str = setting("", doc="YAML of profiles; empty = the shipped devices.yaml")
    population: dict[str, float] | None = setting(
        None, doc="profile -> fraction of clients; empty = the profiles file's mix"
    )
    memory_figure: str = setting(
        "sparse",
        choices=MEMORY_FIGURES,
        doc="peak held against budgets: sparse = with the model stored "
        "sparsely, dense = the simulator's dense buffers",
    )
    round_deadline_s: float = setting(
        0.0, ge=0.0, doc="simulated seconds after which stragglers are dropped; 0 = none"
    )


@dataclass(frozen=True)
class TrackingConfig:
    """``tracking.*``: where MLflow records the run."""

    experiment: str = setting(
        "fpzo_ray",
        max_len=256,
        doc="MLflow experiment name (its SQL stores hold at most 256 characters)",
    )


@dataclass(frozen=True)
class TaskConfig:
    """``task.*``: what clients minimise and what the server's evaluation reports."""

    loss: str = setting(
        "cross_entropy",
        choices=LOSSES,
        paths=True,
        doc="per-sample loss by name, or yours as 'module:function' called as "
        "function(outputs, targets[, reduction='none'])",
    )
    metrics: str = setting(
        "auto",
        listed=True,
        doc="comma-separated (or a YAML list): accuracy, macro_f1, or yours as "
        "'module:function' "
        "called as function(outputs, targets) -> number on a whole split, logged as "
        "val_<function> and test_<function>; auto = accuracy for cross_entropy, "
        "token_cross_entropy and bce_with_logits, none otherwise",
    )
    federated_eval_clients: int = setting(
        0,
        ge=0,
        doc="clients (sampled, seeded) that score the global model on their own held-out "
        "data at each evaluation, logged as federated_loss and federated_<metric> (their "
        "sample-weighted mean) and federated_<metric>_p10 (the 10th percentile over "
        "clients); 0 = none",
    )
    client_holdout: float = setting(
        0.2,
        gt=0.0,
        lt=1.0,
        doc="fraction of each client's partition kept out of its training for federated "
        "evaluation (only with federated_eval_clients)",
    )


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a federated run: a run is a function of this and nothing else."""

    seed: int = setting(0, ge=0)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    zo: ZOConfig = field(default_factory=ZOConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def model_name(self) -> str:
        """The concrete model: its import path, or a registered name (``auto`` resolves by
        data set: a researcher's data set gets the name ``auto`` asks for nothing)."""
        if self.model.target:
            return self.model.target
        if self.model.name != "auto":
            return self.model.name
        return registry.DATASETS.info(self.data.name, "model")

    @property
    def data_name(self) -> str:
        """The data set: its loader's import path or its registered name."""
        return self.data.target or self.data.name

    @property
    def pruning_method(self) -> str:
        """The method actually run: any method at sparsity 0 is the dense model."""
        return "dense" if self.pruning.sparsity == 0.0 else self.pruning.method


def _check_value(path: str, value: Any, tp: Any, rule: Mapping[str, Any]) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config error: {path}: got {value!r}, must be true or false")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config error: {path}: got {show(value)}, must be an integer")
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ConfigError(f"config error: {path}: got {show(value)}, must fit in 64 bits")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config error: {path}: got {show(value)}, must be a number")
        if isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ConfigError(f"config error: {path}: got {show(value)}, must be a finite number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"config error: {path}: got {value!r}, must be a finite number")
        if abs(value) > FLOAT32_MAX or 0 < abs(value) < FLOAT32_TINY:
            raise ConfigError(
                f"config error: {path}: got {value!r}, must be 0 or between "
                f"{FLOAT32_TINY:.2g} and {FLOAT32_MAX:.3g} in size (it is used in float32)"
            )
    elif tp is str:
        if rule.get("listed") and isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) and v and "," not in v for v in value):
                raise ConfigError(
                    f"config error: {path}: got {show(value)}, must be a list of names"
                )
            value = ",".join(value)
        if not isinstance(value, str):
            raise ConfigError(f"config error: {path}: got {show(value)}, must be a string")
        check_text(path, value)
        max_len = rule.get("max_len")
        if max_len is not None and not 1 <= len(value) <= max_len:
            raise ConfigError(
                f"config error: {path}: got {show(value)} ({len(value)} characters), must be "
                f"1 to {max_len} characters"
            )
    elif tp == ARGS_TYPE:  # keyword arguments of a component
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(
                f"config error: {path}: got {show(value)}, must map argument names to values"
            )
        return dict(value)
    elif typing.get_origin(tp) in (types.UnionType, typing.Union):  # a mapping of numbers, or None
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str)
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and INT_RANGE[0] <= v <= INT_RANGE[1]
            and math.isfinite(v)
            and 0 <= v <= FLOAT32_MAX
            for k, v in value.items()
        ):
            raise ConfigError(
                f"config error: {path}: got {show(value)}, must map names to finite numbers >= 0"
            )
        return {k: float(v) for k, v in value.items()}
    choices = rule.get("choices")
    if choices is not None and value not in choices:
        if rule.get("paths") and registry.is_import_path(value):
            return value  # imported and checked by _check_targets
        also = " or an import path 'module:attribute'" if rule.get("paths") else ""
        raise ConfigError(
            f"config error: {path}: got {show(value)}, allowed: {', '.join(choices)}{also}"
        )
    for key, op, words in (
        ("ge", float.__ge__, ">="),
        ("gt", float.__gt__, ">"),
        ("le", float.__le__, "<="),
        ("lt", float.__lt__, "<"),
    ):
        bound = rule.get(key)
        if bound is not None and not op(float(value), float(bound)):
            raise ConfigError(f"config error: {path}: got {value!r}, must be {words} {bound}")
    return value


#: Fields that moved, old name -> new: the old name is an error saying where it went.
MOVED_FIELDS = {"zo.ema_decay": "training.ema_decay"}


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"config error: {where}: got {raw!r}, must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    for key in unknown:
        if f"{prefix}{key}" in MOVED_FIELDS:
            raise ConfigError(f"config error: {prefix}{key}: moved to {MOVED_FIELDS[prefix + key]}")
    if unknown:
        raise ConfigError(
            f"config error: {prefix}{unknown[0]}: unknown key, allowed: {', '.join(fields)}"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            values[name] = _check_value(f"{prefix}{name}", value, tp, fields[name].metadata)
    return cls(**values)


def _cross_check(cfg: RunConfig) -> None:
    """Rules that involve more than one field."""
    sim = cfg.simulation
    for name in ("worker_gpus", "server_gpus"):
        value = getattr(sim, name)
        if 0 < value < RAY_RESOURCE_STEP:
            raise ConfigError(
                f"config error: simulation.{name}: got {value!r}, must be 0 or >= "
                f"{RAY_RESOURCE_STEP} (Ray counts resources in steps of {RAY_RESOURCE_STEP})"
            )
    if cfg.training.clients_per_round > cfg.data.num_clients:
        raise ConfigError(
            f"config error: training.clients_per_round: got {cfg.training.clients_per_round}, "
            f"must be <= data.num_clients ({cfg.data.num_clients})"
        )
    if cfg.pruning.clients_per_iteration > cfg.data.num_clients:
        raise ConfigError(
            f"config error: pruning.clients_per_iteration: got {cfg.pruning.clients_per_iteration}"
            f", must be <= data.num_clients ({cfg.data.num_clients})"
        )
    if cfg.model.target and cfg.model.name != "auto":
        raise ConfigError(
            f"config error: model.target: set either model.name ({cfg.model.name}) or "
            "model.target, not both"
        )
    if cfg.data.target and cfg.model.name == "auto" and not cfg.model.target:
        raise ConfigError(
            "config error: model.name: auto picks a model for a registered data set; with "
            "data.target name a model (model.name or model.target)"
        )
    side = registry.DATASETS.info(cfg.data_name, "side")
    min_side = registry.MODELS.info(cfg.model_name, "min_side")
    if side is not None and min_side is not None and side < min_side:
        raise ConfigError(
            f"config error: model.name: {cfg.model_name} needs images of at least "
            f"{min_side} px, {cfg.data.name} has {side}"
        )
    if cfg.zo.microbatch_size > 0 and cfg.model.norm == "batch":
        raise ConfigError(
            "config error: zo.microbatch_size: needs per-sample normalisation "
            "(model.norm group or none); batch statistics change with the chunk"
        )
    if cfg.zo.microbatch_size > 0 and (
        cfg.zo.perturbation_scope != "full" or cfg.zo.batching not in ("loop", "auto")
    ):
        raise ConfigError(
            "config error: zo.microbatch_size: only with zo.perturbation_scope "
            "full and zo.batching loop or auto"
        )
    if cfg.zo.dropout == "same_mask" and (
        cfg.zo.perturbation_scope != "full" or cfg.zo.batching not in ("loop", "auto")
    ):
        raise ConfigError(
            "config error: zo.dropout: same_mask seeds each pass of the plain loop; it needs "
            "zo.perturbation_scope full and zo.batching loop or auto"
        )
    if cfg.zo.batching not in ("loop", "auto") and cfg.zo.perturbation_scope == "layerwise":
        raise ConfigError(
            f"config error: zo.batching: got {cfg.zo.batching!r}, the layer-wise variant runs "
            "its own loop over stages (zo.batching loop or auto)"
        )
    if cfg.training.bp_microbatch_size > 0 and cfg.model.norm == "batch":
        raise ConfigError(
            "config error: training.bp_microbatch_size: needs per-sample "
            "normalisation (model.norm group or none); batch statistics change "
            "with the chunk"
        )
    modes = registry.ALGORITHMS.get(cfg.training.algorithm)
    if modes is not None and cfg.training.mode not in modes:
        raise ConfigError(
            f"config error: training.mode: got {cfg.training.mode!r}, algorithm "
            f"{cfg.training.algorithm} runs {', '.join(modes)}"
        )
    if cfg.model.buffers == "recalibrate" and cfg.data.validation_fraction == 0:
        raise ConfigError(
            "config error: model.buffers: recalibrate measures the running statistics on "
            "validation inputs, and data.validation_fraction is 0 (no validation split)"
        )
    if cfg.task.federated_eval_clients > cfg.data.num_clients:
        raise ConfigError(
            f"config error: task.federated_eval_clients: got {cfg.task.federated_eval_clients}"
            f", more than the {cfg.data.num_clients} clients (data.num_clients)"
        )
    if cfg.model.buffers == "local" and cfg.task.federated_eval_clients == 0:
        raise ConfigError(
            "config error: model.buffers: local keeps each client's statistics on the client, "
            "where only federated evaluation reads them; set task.federated_eval_clients"
        )
    if cfg.model.args and cfg.model.kwargs is not None:
        raise ConfigError(
            "config error: model.kwargs: set either model.args (build(input_shape, "
            "num_classes, **args)) or model.kwargs (build(**kwargs)), not both"
        )
    for args_field, args, owner_field, owner in (
        ("model.args", cfg.model.args, "model.target", cfg.model.target),
        ("model.kwargs", cfg.model.kwargs, "model.target", cfg.model.target),
        ("data.args", cfg.data.args, "data.target", cfg.data.target),
        ("pruning.args", cfg.pruning.args, "pruning.method", cfg.pruning.method),
    ):
        if args and not registry.is_import_path(owner):
            raise ConfigError(
                f"config error: {args_field}: keyword arguments of a component given by "
                f"import path in {owner_field}, which names none"
            )
    _check_metrics(cfg)
    _check_callbacks(cfg)
    if not _IMPORTS_TARGETS.get():
        return  # a record of a run, not a run to start: nothing of it is imported
    _check_targets(cfg)
    if (
        cfg.zo.dropout == "same_mask"
        and registry.DIFFERENCE_SCHEMES.load(cfg.zo.estimator).needs_base
    ):
        raise ConfigError(
            f"config error: zo.dropout: same_mask needs an estimator without a shared base "
            f"pass (central); {cfg.zo.estimator} compares every direction with one base pass"
        )
    if cfg.zo.generator == "philox" and registry.is_import_path(cfg.zo.direction):
        raise ConfigError(
            f"config error: zo.direction: {cfg.zo.direction} draws from a torch.Generator, "
            "which zo.generator: philox does not provide (set zo.generator: torch_cpu)"
        )
    if cfg.training.args and not registry.is_import_path(cfg.training.algorithm):
        registry.algorithm_class(cfg.training.algorithm, cfg.training.mode).validate(cfg)


def listed_entries(value: str) -> list[str]:
    """The entries of a listed field (comma-separated; a YAML list was joined so)."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def _check_callbacks(cfg: RunConfig) -> None:
    """``training.callbacks``: import paths, each named once."""
    entries = listed_entries(cfg.training.callbacks)
    for entry in entries:
        if not registry.is_import_path(entry):
            raise ConfigError(
                f"config error: training.callbacks: got {entry!r}, must be an import path "
                "'module:Class'"
            )
    if len(set(entries)) < len(entries):
        raise ConfigError("config error: training.callbacks: names a callback twice")


def metric_names(loss: str, metrics: str) -> list[str]:
    """The entries of ``task.metrics`` (comma-separated; ``auto``: accuracy where the loss
    has classes)."""
    if metrics == "auto":
        return ["accuracy"] if loss in CLASSIFICATION_LOSSES else []
    return listed_entries(metrics)


def metric_key(entry: str) -> str:
    """The name a metric is reported under: a named one's, or an import path's attribute
    (``my_metrics:macro_f1`` -> ``macro_f1``)."""
    return entry.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


def _check_metrics(cfg: RunConfig) -> None:
    """``task.metrics``: names or import paths, reported under distinct keys; accuracy where
    ``training.target_accuracy`` waits for it."""
    entries = metric_names(cfg.task.loss, cfg.task.metrics)
    keys: set[str] = set()
    for entry in entries:
        if entry not in METRICS and not registry.is_import_path(entry):
            raise ConfigError(
                f"config error: task.metrics: got {entry!r}, allowed: {', '.join(METRICS)} or "
                "an import path 'module:function'"
            )
        key = metric_key(entry)
        if key in keys or key == "loss":
            why = "is the loss's" if key == "loss" else "names two metrics"
            raise ConfigError(
                f"config error: task.metrics: {entry!r}: the key val_{key} {why}; rename the "
                "function"
            )
        keys.add(key)
    if cfg.training.target_accuracy > 0 and "accuracy" not in keys:
        raise ConfigError(
            "config error: training.target_accuracy: the task reports no accuracy "
            f"(task.metrics: {cfg.task.metrics!r} with task.loss {cfg.task.loss})"
        )


def _check_targets(cfg: RunConfig) -> None:
    """Import every component the configuration names by import path, here on the driver
    before any work, and hold it to its extension point's contract: a missing module or
    attribute, or a wrong signature, is one line naming the field and the target."""
    for field_name, check in registry.TARGET_CHECKS.items():
        section, key = field_name.split(".")
        value = getattr(getattr(cfg, section), key)
        if not value or not (key == "target" or registry.is_import_path(value)):
            continue  # unset, or a registered name
        try:
            check(value, cfg)
        except registry.TargetError as exc:
            raise ConfigError(f"config error: {field_name}: {exc}") from None
        except ConfigError:
            raise
    for entry in metric_names(cfg.task.loss, cfg.task.metrics):
        if registry.is_import_path(entry):
            try:
                registry.check_call(registry.import_target(entry), entry, (None, None), {})
            except registry.TargetError as exc:
                raise ConfigError(f"config error: task.metrics: {exc}") from None
    for entry in listed_entries(cfg.training.callbacks):
        try:
            registry.check_callback(entry)
        except registry.TargetError as exc:
            raise ConfigError(f"config error: training.callbacks: {exc}") from None


def field_type(dotted: str) -> type:
    """The type of the configuration field ``dotted`` (``training.server_lr`` -> float).

    A key inside a component's ``args`` (``training.args.pool_size``) is ``object``: any
    value, checked by the component when the configuration is built. Raises
    :class:`ConfigError` naming the key when it is not a field (or is a section).
    """
    cls: Any = RunConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if cls == ARGS_TYPE:
            return object
        hints = typing.get_type_hints(cls)
        if dotted in MOVED_FIELDS:
            raise ConfigError(f"config error: {dotted}: moved to {MOVED_FIELDS[dotted]}")
        if part not in hints:
            allowed = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(
                f"config error: {dotted}: unknown key, allowed at "
                f"{'.'.join(parts[:depth]) or 'the top level'}: {allowed}"
            )
        cls = hints[part]
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"config error: {dotted}: is a section, not a field")
    return cls


def build_section(cls: type, raw: Mapping[str, Any] | None, prefix: str) -> Any:
    """A frozen dataclass (a section, or an algorithm's ``Params``) from a mapping, checked
    like the configuration: unknown keys and wrong types are a :class:`ConfigError` naming
    ``prefix + key``."""
    return _build(cls, raw or {}, prefix)


_IMPORTS_TARGETS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "fpzo_imports_targets", default=True
)


@contextlib.contextmanager
def records_only() -> Iterator[None]:
    """Inside, configurations are read as records of runs that happened (a report of a
    study): the components they name by import path are checked for form but not imported,
    so a report needs none of the researcher's modules and runs none of their code."""
    token = _IMPORTS_TARGETS.set(False)
    try:
        yield
    finally:
        _IMPORTS_TARGETS.reset(token)


def config_from_dict(raw: Mapping[str, Any] | None) -> RunConfig:
    """Build and validate a :class:`RunConfig` from nested dicts; raises :class:`ConfigError`."""
    cfg = _build(RunConfig, raw or {}, "")
    _cross_check(cfg)
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Nested plain-dict form (YAML/JSON friendly) of a configuration."""
    return dataclasses.asdict(cfg)


#: The fields a component named by import path makes meaningless (the registered data set's
#: name; the built-in architecture's name, normalisation and activation).
REPLACED_BY_TARGET = {
    "data": ("name",),
    "model": ("name", "norm", "norm_groups", "activation"),
}


def params_of(cfg: RunConfig) -> dict[str, Any]:
    """A run's parameters as MLflow records them: :func:`config_to_dict` without the fields
    that ``data.target`` or ``model.target`` replace (``data.name: digits`` beside a data set
    of one's own would say what did not run)."""
    tree = config_to_dict(cfg)
    for section, fields in REPLACED_BY_TARGET.items():
        if tree[section]["target"]:
            for field in fields:
                del tree[section][field]
    return tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"zo": {"sigma": 1e-3}}`` -> ``{"zo.sigma": 1e-3}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted = "a.b"``, creating sections on the way."""
    *sections, leaf = dotted.split(".")
    node = tree
    for section in sections:
        child = node.setdefault(section, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error: {dotted}: {section} is not a section")
        node = child
    node[leaf] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["zo.sigma=0.001", "seed=3"]`` -> nested dict; values are read as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"config error: {item}: overrides look like section.key=value")
        dotted, text = item.split("=", 1)
        set_dotted(tree, dotted.strip(), load_yaml_text(text, f"--set {dotted.strip()}"))
    return tree


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts; ``update`` wins."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path, field: str | None = None) -> dict[str, Any]:
    """Read a YAML mapping; a path that is not UTF-8, a missing, unreadable, oversized,
    binary, malformed or too deeply nested file, or one with an alias bomb or a duplicate key
    is a one-line :class:`ConfigError` naming the file (and the ``field`` that pointed at it,
    when one did)."""
    require_utf8_paths({field or "config file": path})
    path = Path(path)
    where = f"{field}: {path}" if field else str(path)
    if not path.is_file():
        raise ConfigError(f"config error: {where}: no such file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"config error: {where}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config error: {where}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(f"config error: {where}: cannot be read ({exc.strerror})") from None
    raw = load_yaml_text(text, where)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {where}: must hold a mapping at the top level")
    return raw


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One configuration field as the references list it."""

    name: str  # dotted, e.g. ``zo.sigma``
    default: Any
    rule: str  # e.g. ``gt 0.0`` or ``one of iid|dirichlet|shards|module:attribute``
    doc: str


def field_infos() -> list[FieldInfo]:
    """Every field of :class:`RunConfig`, in declaration order, with its default, its rule
    and its documentation: what ``--help`` and ``docs/reference/fields.md`` list."""
    infos = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
                continue
            meta = f.metadata
            rule = ", ".join(
                "one of " + "|".join(v) + ("|module:attribute" if meta.get("paths") else "")
                if k == "choices"
                else f"{k} {v}"
                for k, v in meta.items()
                if v not in (None, "") and k not in ("doc", "paths", "listed")
            )
            infos.append(FieldInfo(f"{prefix}{f.name}", f.default, rule, meta.get("doc", "")))

    walk(RunConfig, "")
    return infos


def describe() -> str:
    """Every field with its default and rule, for ``--help``-style listings."""
    return "\n".join(
        f"  {f.name} = {f.default!r}"
        + (f"  [{f.rule}]" if f.rule else "")
        + (f"  {f.doc}" if f.doc else "")
        for f in field_infos()
    )


__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "PruningConfig",
    "ZOConfig",
    "TrainingConfig",
    "SimulationConfig",
    "DevicesConfig",
    "TrackingConfig",
    "config_from_dict",
    "config_to_dict",
    "field_type",
    "flatten",
    "merge",
    "parse_overrides",
    "read_yaml",
    "require_utf8_paths",
    "set_dotted",
    "describe",
]
