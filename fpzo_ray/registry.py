"""Every extension point's registry: the names a configuration may choose, and import paths.

Each extension point (models, data sets, partitioners, pruning methods, ZO difference
schemes, direction kinds, server optimizers, training algorithms) has one :class:`Registry`
below. An entry names what it registers as ``module:attribute`` and is imported on first use,
so the configuration can check its choices against these tables without importing torch; the
configuration's allowed values, the dispatch of every component, the report labels and the
checks of a user's component all read them. A researcher's own component is not registered
here: it is named by its import path (``my_nets:build``) in ``model.target`` or
``data.target``, or in place of a registered name in the other fields, and imported the same
way on the driver and on every Ray worker (``docs/EXTENDING.md``).

This module imports nothing of fpzo_ray at import time (``config`` sits on top of it).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: ``package.module:attribute`` (the attribute may be dotted: ``module:Class.method``).
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class TargetError(ValueError):
    """An import path that does not resolve to what its field needs (message: why, no field)."""


@dataclass(frozen=True)
class Entry:
    """One registered component: where it lives and what the rest of the package knows of
    it without importing it (``info``: a label, an image size, a default model, ...)."""

    path: str
    info: Mapping[str, Any] = field(default_factory=dict)


def is_import_path(value: str) -> bool:
    return bool(IMPORT_PATH.match(value))


def import_target(path: str) -> Any:
    """The object ``module:attribute`` names; :class:`TargetError` saying what is missing."""
    if not is_import_path(path):
        raise TargetError(f"{path!r} is not an import path like 'my_module:my_function'")
    module_name, attribute = path.split(":")
    printed = io.StringIO()
    try:
        # what the module prints while it imports is not the command's output: kept for the
        # debug log (FPZO_LOG_LEVEL=DEBUG), never above a one-line error
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            obj: Any = importlib.import_module(module_name)
    except SystemExit as exc:  # sys.exit() at import: an error, never the command's exit
        raise TargetError(
            f"{path!r}: importing {module_name} called sys.exit({exc.code!r})"
        ) from None
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise TargetError(
                f"{path!r}: no module named {exc.name!r} (is its folder the working "
                "directory, on PYTHONPATH or in the Ray job's py_modules?)"
            ) from None
        raise TargetError(f"{path!r}: importing {module_name} failed: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise TargetError(
            f"{path!r}: importing {module_name} raised {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    finally:
        if printed.getvalue():
            log.debug("importing %s printed:\n%s", module_name, printed.getvalue())
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{path!r}: module {module_name} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def check_call(obj: Any, path: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`TargetError` unless ``obj(*args, **kwargs)`` would bind its signature
    (nothing is called)."""
    if not callable(obj):
        raise TargetError(f"{path!r} is a {type(obj).__name__}, not a function or class")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # a builtin without a signature: trust it
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TargetError(f"{path!r}{signature} cannot be called this way: {exc}") from None


def model_call(
    obj: Any,
    input_shape: tuple[int, ...],
    num_classes: int,
    args: Mapping[str, Any] | None,
    kwargs: Mapping[str, Any] | None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments ``model.target`` is called with.

    A builder of this project's form, ``build(input_shape, num_classes, **model.args)``, gets
    them positionally. A builder from a zoo takes keywords only (torchvision's
    ``resnet18(*, weights=None, progress=True, **kwargs)``): with ``model.kwargs``, or when
    it cannot take the two positionally, it is called with keywords, ``num_classes`` and
    ``input_shape`` filled in where its signature takes them and the configuration does not
    set them. Nothing is called here.
    """
    if kwargs is None:
        positional = ((input_shape, num_classes), dict(args or {}))
        if args or _binds(obj, *positional):
            return positional
        kwargs = {}
    filled = dict(kwargs)
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # a builtin without a signature: as written
        return (), filled
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for name, value in (("num_classes", num_classes), ("input_shape", input_shape)):
        takes = name in parameters or (open_ended and name == "num_classes")
        if takes and name not in filled:
            filled[name] = value
    return (), filled


def _binds(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    try:
        inspect.signature(obj).bind(*args, **kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature to read: assume the project's form
        return True
    return True


class Registry:
    """The registered components of one extension point (see the module docstring)."""

    def __init__(self, what: str, entries: Mapping[str, Entry | str]) -> None:
        self.what = what
        self.entries = {
            name: entry if isinstance(entry, Entry) else Entry(entry)
            for name, entry in entries.items()
        }

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def info(self, name: str, key: str, default: Any = None) -> Any:
        """What the entry ``name`` declares under ``key`` (``default`` when it does not, or
        when ``name`` is an import path)."""
        entry = self.entries.get(name)
        return default if entry is None else entry.info.get(key, default)

    def load(self, name_or_path: str) -> Any:
        """The component a registered name or an import path names."""
        entry = self.entries.get(name_or_path)
        if entry is not None:
            return import_target(entry.path)
        if is_import_path(name_or_path):
            return import_target(name_or_path)
        raise TargetError(
            f"{name_or_path!r} is no registered {self.what} ({', '.join(self.names)}) "
            "and no import path like 'my_module:attribute'"
        )


def _entries(module: str, **attributes: str) -> dict[str, str]:
    return {name: f"{module}:{attribute}" for name, attribute in attributes.items()}


#: ``model.name``: ``build(input_shape, num_classes, **options) -> nn.Module``. ``min_side``:
#: the smallest image side the architecture accepts.
MODELS = Registry(
    "model",
    {
        "digits_cnn": Entry("fpzo_ray.models.digits_cnn:DigitsCNN", {"min_side": 4}),
        "lenet5": Entry("fpzo_ray.models.lenet:LeNet5", {"min_side": 12}),
        "resnet20": Entry("fpzo_ray.models.resnet:ResNet20", {"min_side": 8}),
        "resnet18": Entry("fpzo_ray.models.resnet:ResNet18", {"min_side": 8}),
    },
)

#: ``data.name``: ``load(cfg.data) -> ArrayDataset``. ``side``: image side; ``model``: what
#: ``model.name: auto`` picks for it.
_IMAGES = "fpzo_ray.data.registry"
DATASETS = Registry(
    "data set",
    {
        "digits": Entry(f"{_IMAGES}:load_digits_dataset", {"side": 8, "model": "digits_cnn"}),
        "mnist": Entry(f"{_IMAGES}:load_mnist_dataset", {"side": 28, "model": "lenet5"}),
        "fashion_mnist": Entry(
            f"{_IMAGES}:load_fashion_mnist_dataset", {"side": 28, "model": "lenet5"}
        ),
        "cifar10": Entry(f"{_IMAGES}:load_cifar10_dataset", {"side": 32, "model": "resnet20"}),
        "cifar100": Entry(f"{_IMAGES}:load_cifar100_dataset", {"side": 32, "model": "resnet20"}),
        "svhn": Entry(f"{_IMAGES}:load_svhn_dataset", {"side": 32, "model": "resnet20"}),
    },
)

#: ``data.partition``: ``partition(labels, cfg.data, rng) -> list of index arrays``.
PARTITIONERS = Registry(
    "partitioner",
    _entries(
        "fpzo_ray.data.partition",
        iid="partition_iid",
        dirichlet="partition_dirichlet",
        shards="partition_shards",
    ),
)

#: ``pruning.method``: a ``pruning.methods.PruningMethod``.
_NO_REFERENCE = {"reference": False}  # random_layerwise cannot copy its layer densities
PRUNING_METHODS = Registry(
    "pruning method",
    {
        "dense": Entry("fpzo_ray.pruning.methods:DENSE", _NO_REFERENCE),
        "random": "fpzo_ray.pruning.methods:RANDOM",
        "random_layerwise": Entry("fpzo_ray.pruning.methods:RANDOM_LAYERWISE", _NO_REFERENCE),
        **_entries(
            "fpzo_ray.pruning.methods",
            magnitude="MAGNITUDE",
            snip="SNIP",
            grasp="GRASP",
            synflow="SYNFLOW",
            ntk_sap="NTK_SAP",
            ntk_sap_data="NTK_SAP_DATA",
            ntk_sap_central="NTK_SAP_CENTRAL",
        ),
    },
)

#: ``zo.estimator``: a ``zo.difference.DifferenceScheme``.
DIFFERENCE_SCHEMES = Registry(
    "difference scheme", _entries("fpzo_ray.zo.difference", forward="FORWARD", central="CENTRAL")
)

#: ``zo.direction``: ``fill(out, generator) -> out``, E[z z^T] = I.
DIRECTION_KINDS = Registry(
    "direction kind",
    _entries("fpzo_ray.zo.perturbation", gaussian="fill_gaussian", rademacher="fill_rademacher"),
)
#: ``zo.generator``: where a direction's random numbers come from (``zo.perturbation``).
#: Under ``philox`` only the registered kinds above run (a researcher's kind draws from a
#: ``torch.Generator``, which ``torch_cpu`` provides).
DIRECTION_GENERATORS = ("philox", "torch_cpu")

#: ``training.server_optimizer``: ``make(params, settings: ServerSettings) -> torch Optimizer``.
SERVER_OPTIMIZERS = Registry(
    "server optimizer",
    _entries("fpzo_ray.optim.server", adam="adam", sgd="sgd", sgd_momentum="sgd_momentum"),
)

#: ``training.algorithm`` -> ``training.mode`` -> its ``algorithms.base.FederatedAlgorithm``.
ALGORITHMS: dict[str, Registry] = {
    "zo": Registry(
        "mode of zo",
        {
            "fedsgd": "fpzo_ray.zo.algorithms.fedsgd:ZOFedSGD",
            "fedavg": "fpzo_ray.zo.algorithms.fedavg:ZOFedAvg",
        },
    ),
    "bp": Registry("mode of bp", {"fedavg": "fpzo_ray.algorithms.bp_fedavg:BPFedAvg"}),
    "zo_momentum": Registry(
        "mode of zo_momentum",
        {"fedsgd": "fpzo_ray.zo.algorithms.fedsgd_momentum:ZOFedSGDMomentum"},
    ),
}


# -- what a researcher's component must be, per field (checked before any work) ---------------


def _args(value: Any) -> dict[str, Any]:
    return dict(value or {})


def _check_model(path: str, cfg: Any) -> None:
    obj = import_target(path)
    check_call(obj, path, *model_call(obj, (1,), 2, cfg.model.args, cfg.model.kwargs))


def _check_data(path: str, cfg: Any) -> None:
    loader = import_target(path)
    if isinstance(loader, type) and loader.__module__.startswith("torchvision."):
        return  # a torchvision data set class: built from data.root (data.registry)
    check_call(loader, path, (), _args(cfg.data.args))


def _called_with(count: int) -> Callable[[str, Any], None]:
    """A function taking ``count`` positional arguments (a partitioner: labels, the data
    section, a generator; a direction fill: out, generator; a server optimizer: params,
    settings)."""

    def check(path: str, cfg: Any) -> None:
        check_call(import_target(path), path, (None,) * count, {})

    return check


def _check_pruning(path: str, cfg: Any) -> None:
    obj = import_target(path)
    if not isinstance(obj, import_target("fpzo_ray.pruning.methods:PruningMethod")):
        check_call(obj, path, (None,), _args(cfg.pruning.args))


def _check_scheme(path: str, cfg: Any) -> None:
    obj = import_target(path)
    if not isinstance(obj, import_target("fpzo_ray.zo.difference:DifferenceScheme")):
        raise TargetError(
            f"{path!r} is a {type(obj).__name__}, not a fpzo_ray.zo.difference.DifferenceScheme"
        )


def algorithm_class(name_or_path: str, mode: str) -> Any:
    """The ``FederatedAlgorithm`` subclass a configuration names (registered pair or path)."""
    modes = ALGORITHMS.get(name_or_path)
    if modes is not None:
        return modes.load(mode)
    cls = import_target(name_or_path)
    base = import_target("fpzo_ray.algorithms.base:FederatedAlgorithm")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TargetError(
            f"{name_or_path!r} is not a subclass of fpzo_ray.algorithms.base.FederatedAlgorithm"
        )
    return cls


def check_callback(path: str) -> None:
    """A run callback: a ``fpzo_ray.sim.callbacks.RunCallback`` subclass built with no
    arguments."""
    cls = import_target(path)
    base = import_target("fpzo_ray.sim.callbacks:RunCallback")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TargetError(f"{path!r} is not a subclass of fpzo_ray.sim.callbacks.RunCallback")
    check_call(cls, path, (), {})


def _check_algorithm(path: str, cfg: Any) -> None:
    algorithm_class(path, cfg.training.mode).validate(cfg)


#: config field -> check(import path, config), raising :class:`TargetError`.
TARGET_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "model.target": _check_model,
    "data.target": _check_data,
    "data.partition": _called_with(3),
    "pruning.method": _check_pruning,
    "zo.estimator": _check_scheme,
    "zo.direction": _called_with(2),
    "training.server_optimizer": _called_with(2),
    "training.algorithm": _check_algorithm,
    "task.loss": _called_with(2),  # outputs, targets
}
