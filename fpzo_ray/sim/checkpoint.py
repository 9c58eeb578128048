"""The server's state on disk: written atomically, read without executing anything, and
checked field by field before anything uses it.

A checkpoint holds tensors and plain data only (numbers, strings, lists, dicts), and is read
with ``torch.load(weights_only=True)``: a crafted file cannot run code on ``--resume``. A file
that cannot be used raises :class:`CheckpointError`, one line naming it; callers then fall back
to an older checkpoint of the same run (:func:`newest_readable`). "Cannot be used" covers:

* a file the loader trips on, whatever the exception (truncated, empty, text, a zip of
  garbage, a link to a system file): the weights-only loader answers such files with
  ``KeyError``, ``IndexError``, ``UnpicklingError``... rather than one documented error;
* a file that loads but does not hold what ``FederatedServer.state_dict`` writes: every field
  is checked against :func:`check_server_state`'s schema (types, ranges, and the consistency
  the fields must have with each other), so that a string where a round count belongs stops
  here, naming the field, instead of deep in the round loop of a resumed run.

What only the model can tell (the mask's length against the model's prunable weights) is
checked by ``FederatedServer.load_state_dict``. Plain PyTorch: nothing here knows Ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeGuard

import torch

from fpzo_ray.artifacts import STATE_FILE
from fpzo_ray.config import RunConfig, config_to_dict

log = logging.getLogger(__name__)

# What ``FederatedServer.state_dict`` writes. ``algorithm``, ``empty_rounds``, ``run_key`` and
# ``statistics`` may be missing: checkpoints from before them lack them (read as ``{}``, 0,
# this run's and the model's initial running statistics).
REQUIRED_FIELDS = (
    "rounds_done",
    "mask",
    "mask_version",
    "optimizer",
    "totals",
    "reached",
    "client_records",
    "pruning_summary",
)
OPTIONAL_FIELDS = ("algorithm", "empty_rounds", "run_key", "statistics")
# What the round loop and the resumed run's first report read from ``pruning_summary``.
SUMMARY_FIELDS = ("pruning_method", "kept_fraction", "num_trained", "num_prunable")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (unreadable, or not a valid server state); the message, one
    line, names the file and, for an invalid state, the field."""


class _Invalid(Exception):
    """A field of a loaded state breaks the schema; the message says which and how."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {_quoted(field)} {problem}" if field else problem)


def save_server_state(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def run_key(cfg: RunConfig) -> str:
    """The fingerprint of a run's configuration (its seed included), which its checkpoints
    carry: a checkpoint of another run (another seed, another sparsity), copied or linked
    into a run folder, is then not mistaken for one of this run's."""
    canonical = json.dumps(config_to_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_server_state(
    path: Path, run: RunConfig | None = None, round_done: int | None = None
) -> dict[str, Any]:
    """The server state saved in ``path``, read with ``weights_only=True`` and checked by
    :func:`check_server_state` (``run``: the run it must belong to, when known;
    ``round_done``: the round its name says it holds)."""
    if not path.is_file():  # follows links: a link to a regular file is read (and checked)
        reason = "not a regular file" if path.exists() else "no such file"
        raise CheckpointError(f"checkpoint {path}: {reason}")
    try:
        if path.stat().st_size == 0:  # the loader's own answer: a bare EOFError
            raise EOFError("an empty file")
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - the loader has no one error for a bad file
        raise CheckpointError(f"checkpoint {path} cannot be read ({_one_line(exc)})") from None
    return check_server_state(state, path, run, round_done)


def check_server_state(
    state: object, path: Path, run: RunConfig | None = None, round_done: int | None = None
) -> dict[str, Any]:
    """``state`` when it is a server state as ``FederatedServer.state_dict`` writes it, else a
    :class:`CheckpointError` naming ``path`` and the first field that is wrong.

    Checked: every field's type and range; no field that the server would silently drop (an
    unknown key means a file of another version, whose resumed run would not be the same);
    and what the fields imply about each other without the model. A mask keeps some of the
    model's P prunable weights, the server trains d = (non-prunable count) + (kept count) of
    them, so ``optimizer.weights`` holds at least as many values as the mask keeps, and the
    pruning summary's ``num_trained`` and ``num_prunable`` are exactly d and P. Past
    the run's ``training.rounds`` no checkpoint is ever written, and a checkpoint of ``run``
    carries its :func:`run_key` and, when its name says, holds ``round_done`` rounds.
    """
    try:
        state = _checked_state(state, run.training.rounds if run is not None else None)
        if run is not None and state.get("run_key", run_key(run)) != run_key(run):
            raise _Invalid("run_key", "is another run's (its configuration or seed differs)")
        if round_done is not None and state["rounds_done"] != round_done:
            done = state["rounds_done"]
            raise _Invalid("rounds_done", f"is {done}, but the checkpoint's name says {round_done}")
        return state
    except _Invalid as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a tensor or text no check foresaw: still refused
        raise CheckpointError(
            f"checkpoint {path} does not hold a valid server state ({_one_line(exc)})"
        ) from None


def newest_readable(
    folders: Sequence[Path | AbstractContextManager[str]],
    warn: Callable[[str], Any] | None = None,
    run: RunConfig | None = None,
    named_by_round: bool = False,
) -> dict[str, Any] | None:
    """The state in the first of ``folders`` (newest first) that can be used; every one that
    cannot is reported through ``warn`` (default: a logged warning) and skipped. None when
    none can be used. The one implementation of the fallback to an older checkpoint, for a
    run's own checkpoint folders and for Tune's: a folder is a path, or a context manager
    giving one (a remote checkpoint, copied while it is read). ``run``: see
    :func:`load_server_state`; ``named_by_round``: each folder is named
    ``checkpoint_<rounds done>``, which its state must match."""
    for folder in folders:
        with nullcontext(folder) if isinstance(folder, Path) else folder as at:
            path = Path(at)
            named = re.fullmatch(r"checkpoint_(\d+)", path.name) if named_by_round else None
            try:
                return load_server_state(
                    path / STATE_FILE, run, int(named.group(1)) if named else None
                )
            except CheckpointError as exc:
                (warn or log.warning)(f"{exc}; trying an older checkpoint")
    return None


# -- the schema ------------------------------------------------------------------------------
def _checked_state(state: object, rounds: int | None) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise _Invalid("", f"does not hold a server state, got {_kind(state)}")
    state = _check_keys(state, "", REQUIRED_FIELDS, OPTIONAL_FIELDS)
    done = _count(state["rounds_done"], "rounds_done")
    if rounds is not None and done > rounds:
        raise _Invalid("rounds_done", f"is {done}, past the run's {rounds} rounds")
    mask = _tensor(state["mask"], "mask", floating=False)
    _count(state["mask_version"], "mask_version")
    weights = _checked_optimizer(state["optimizer"], kept=int(mask.sum()))
    _checked_algorithm(state.get("algorithm", {}))
    _count(state.get("empty_rounds", 0), "empty_rounds")
    if "statistics" in state:
        _tensor(state["statistics"], "statistics", floating=True, finite=True)
    if not isinstance(state.get("run_key", ""), str):
        raise _Invalid("run_key", f"must be a string, got {_kind(state['run_key'])}")
    for name in ("totals", "reached"):
        for key, value in _str_dict(state[name], name).items():
            if not _is_finite_number(value):
                raise _Invalid(f"{name}.{key}", f"must be a finite number, got {_kind(value)}")
    _checked_records(state["client_records"])
    _checked_summary(state["pruning_summary"], mask, weights)
    return state


def _checked_optimizer(value: object, kept: int) -> torch.Tensor:
    """``ServerOptimizer.state_dict``'s: the trained vector, the torch optimizer over it, the
    EMA of it. Returns the trained vector."""
    value = _check_keys(value, "optimizer", ("weights", "optimizer", "ema"))
    weights = _tensor(value["weights"], "optimizer.weights", floating=True, finite=True)
    if weights.numel() < kept:
        raise _Invalid(
            "optimizer.weights",
            f"holds {weights.numel()} values, fewer than the {kept} weights the mask keeps",
        )
    _checked_torch_optimizer(value["optimizer"], "optimizer.optimizer", weights.shape)
    if value["ema"] is not None:
        _tensor(value["ema"], "optimizer.ema", floating=True, shape=weights.shape, finite=True)
    return weights


def _checked_torch_optimizer(value: object, field: str, shape: torch.Size) -> None:
    """A ``torch.optim.Optimizer.state_dict()`` over the one trained vector: what
    ``Optimizer.load_state_dict`` would otherwise refuse half-way through the server's
    restore (another number of groups or parameters), or accept and fail on at the first
    step (a string learning rate, a moment of another shape)."""
    value = _check_keys(value, field, ("state", "param_groups"))
    groups = value["param_groups"]
    if not (isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)):
        raise _Invalid(
            f"{field}.param_groups",
            f"must be a list of one parameter group (the server trains one vector), "
            f"got {_kind(groups)}",
        )
    group: dict[Any, Any] = groups[0]
    where = f"{field}.param_groups[0]"
    params = group.get("params")
    if not (isinstance(params, list) and len(params) == 1 and _is_count(params[0])):
        raise _Invalid(f"{where}.params", f"must list one parameter id, got {_kind(params)}")
    lr = group.get("lr")
    if not (_is_finite_number(lr) and lr >= 0):
        raise _Invalid(f"{where}.lr", f"must be a non-negative number, got {_kind(lr)}")
    for key, setting in _str_dict(group, where).items():
        if key != "params" and not _is_setting(setting):
            raise _Invalid(
                f"{where}.{key}",
                f"must be None, a flag, a finite number or numbers, got {_kind(setting)}",
            )
    state = value["state"]
    if not isinstance(state, dict):
        raise _Invalid(f"{field}.state", f"must be a dict, got {_kind(state)}")
    for key, slots in state.items():
        if not (_is_count(key) and key == params[0]):
            raise _Invalid(
                f"{field}.state", f"must be parameter {params[0]}'s only, got key {_kind(key)}"
            )
        for name, slot in _str_dict(slots, f"{field}.state[{key}]").items():
            if slot is None or _is_finite_number(slot):
                continue
            if not (_is_dense(slot) and slot.shape in (torch.Size([]), shape)):
                raise _Invalid(
                    f"{field}.state[{key}].{name}",
                    f"must be None, a number or a tensor of shape () or {tuple(shape)}, "
                    f"got {_kind(slot)}",
                )


def _checked_algorithm(value: object) -> None:
    """The algorithm's server state (``Algorithm.state_dict``): named tensors and numbers.
    Their shapes are the algorithm's business; a tensor's type is checked here."""
    for key, item in _str_dict(value, "algorithm").items():
        if not (_is_setting(item) or _is_dense(item)):
            raise _Invalid(
                f"algorithm.{key}", f"must be None, a number or a tensor, got {_kind(item)}"
            )


def _checked_records(value: object) -> None:
    """One JSON text (``FederatedServer.state_dict``) holding a list of client records."""
    if not isinstance(value, str):
        raise _Invalid("client_records", f"must be a JSON text, got {_kind(value)}")
    try:
        records = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise _Invalid("client_records", f"is not JSON ({_one_line(exc)})") from None
    if not isinstance(records, list):
        raise _Invalid("client_records", f"must be a JSON list, got {_kind(records)}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise _Invalid(f"client_records[{i}]", f"must be a JSON object, got {_kind(record)}")


def _checked_summary(value: object, mask: torch.Tensor, weights: torch.Tensor) -> None:
    """The pruning phase's summary: what a resumed run reports with its first round, and the
    model's d and P, which must be the state's (see :func:`check_server_state`)."""
    summary = _str_dict(value, "pruning_summary")
    missing = [k for k in SUMMARY_FIELDS if k not in summary]
    if missing:
        raise _Invalid(f"pruning_summary.{missing[0]}", "is missing")
    if not isinstance(summary["pruning_method"], str):
        raise _Invalid(
            "pruning_summary.pruning_method",
            f"must be a str, got {_kind(summary['pruning_method'])}",
        )
    kept_fraction = summary["kept_fraction"]
    if not (_is_finite_number(kept_fraction) and 0 <= kept_fraction <= 1):
        raise _Invalid(
            "pruning_summary.kept_fraction",
            f"must be a number in [0, 1], got {_kind(kept_fraction)}",
        )
    for key, size, holder in (
        ("num_trained", weights.numel(), "optimizer.weights"),
        ("num_prunable", mask.numel(), "mask"),
    ):
        if _count(summary[key], f"pruning_summary.{key}") != size:
            raise _Invalid(
                f"pruning_summary.{key}",
                f"is {summary[key]}, but field {_quoted(holder)} holds {size} values",
            )


# -- the checks' vocabulary ------------------------------------------------------------------
def _check_keys(
    value: object, field: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``value``, a dict with every ``required`` key and none beyond ``optional``."""
    keys = _str_dict(value, field)
    prefix = f"{field}." if field else ""
    for key in required:
        if key not in keys:
            raise _Invalid(prefix + key, "is missing")
    for key in keys:
        if key not in required + optional:
            raise _Invalid(prefix + key, "is not part of a server state")
    return keys


def _str_dict(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(field, f"must be a dict, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise _Invalid(field, f"must have names for keys, got {_kind(key)}")
    return value


def _count(value: object, field: str) -> int:
    if not _is_count(value):
        raise _Invalid(field, f"must be a non-negative integer, got {_kind(value)}")
    return value


def _tensor(
    value: object,
    field: str,
    *,
    floating: bool,
    shape: torch.Size | None = None,
    finite: bool = False,
) -> torch.Tensor:
    """``value`` as a dense tensor of the kind asked: bool or floating point, 1-D or of
    ``shape``, with finite values only when ``finite``."""
    kind_name = "floating-point" if floating else "bool"
    want = (
        f"a 1-D {kind_name} tensor"
        if shape is None
        else f"a {kind_name} tensor of shape {tuple(shape)}"
    )
    if not _is_dense(value):
        raise _Invalid(field, f"must be {want}, got {_kind(value)}")
    kind = value.dtype.is_floating_point if floating else value.dtype == torch.bool
    if not kind or (value.dim() != 1 if shape is None else value.shape != shape):
        raise _Invalid(field, f"must be {want}, got {_kind(value)}")
    if finite:
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise _Invalid(field, f"must hold finite values, got {bad} NaN or infinite")
    return value


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_finite_number(value: object) -> TypeGuard[int | float]:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
    )


def _is_setting(value: object) -> bool:
    """A plain setting: None, a flag, a name, a finite number, or a tuple/list of numbers (an
    optimizer's ``betas``)."""
    if value is None or isinstance(value, (bool, str)) or _is_finite_number(value):
        return True
    return isinstance(value, (tuple, list)) and all(_is_finite_number(v) for v in value)


def _is_dense(value: object) -> TypeGuard[torch.Tensor]:
    return isinstance(value, torch.Tensor) and value.layout == torch.strided


def _kind(value: object) -> str:
    """What a wrong value is, short: a type, a tensor's dtype and shape, a number's value."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        article = "an" if dtype[0] in "aeiou" else "a"
        return f"{article} {dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if value.bit_length() <= 64 else f"a {value.bit_length()}-bit integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def _quoted(field: str) -> str:
    """A field name in a message: quoted, escaped (a name read from a file may hold a
    newline), and a name read from a file shortened when long."""
    return repr(field if len(field) <= 80 else field[:77] + "...")


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line and whole (whitespace runs, newlines
    included, become one space): the reason the loader gave, for whoever fixes the file."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
