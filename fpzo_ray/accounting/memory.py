"""Peak training memory of a client's local step, measured and estimated (plain PyTorch).

The claim of BP-free training is that a low-memory device can train without keeping the
activations autograd needs for backward. This module measures that claim instead of asserting it:

* :class:`MemoryMeter` records the live bytes of tensor storages while a ZO step or a BP step
  runs, split into categories, and the breakdown at the moment of the peak. It sees every
  tensor an ATen op returns (a ``TorchDispatchMode`` sits below autograd, so it also sees the
  tensors the autograd engine creates during ``backward()``). It does *not* see memory a
  kernel allocates internally and frees before returning (im2col / oneDNN scratch on the CPU,
  cuDNN workspaces), nor the allocator's rounding; on CUDA the allocator's own peak
  (``allocator_peak_bytes``) includes both.
* :func:`analytical_peak_bytes` is an independent estimate from the layer shapes, to
  cross-check the meter and to extrapolate to models too big to run here.
* :func:`sparse_storage_bytes` / :func:`sparse_peak_bytes`: what the parameters would cost
  stored sparsely after pruning.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from fpzo_ray.accounting.communication import mask_position_bytes
from fpzo_ray.models.staged import StagedModel

#: The categories live bytes are split into; ``other`` is for whatever a caller cannot name.
CATEGORIES = (
    "parameters",
    "masks",
    "inputs",
    "activations",
    "gradients",
    "optimizer_state",
    "zo_buffers",
    "other",
)
FLOAT32_BYTES = 4
INT32_BYTES = 4
INT64_BYTES = 8


def _storage_of(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """The tensor's storage, or None for tensors that have no countable one.

    Meta tensors allocate nothing; sparse tensors and some tensor subclasses raise on
    ``untyped_storage()`` (they are not used by this project's models; they are skipped).
    """
    if tensor.device.type == "meta":
        return None
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


class MemoryMeter(TorchDispatchMode):
    """Live and peak bytes of tensor storages, per category, while the mode is active.

    Usage::

        meter = MemoryMeter()
        meter.track(flat, "parameters"); meter.track(images, "inputs")
        with meter:
            loss = loss_fn(model(images), labels)          # new storages -> "activations"
            with meter.phase("gradients"):
                loss.backward()
        meter.peak_bytes, meter.peak_breakdown

    Accounting rules:

    * The unit is the *storage*, not the tensor: views, ``detach()``, ``t()``, in-place and
      ``out=`` ops return tensors whose storage already exists, so nothing new is counted. A
      storage is identified by ``storage._cdata`` (the address of its C++ ``StorageImpl``),
      which, unlike ``data_ptr()``, is also distinct for empty storages.
    * A storage an op returns is *new* when it is neither tracked nor the storage of one of the
      op's tensor inputs (the latter is a pre-existing, untracked tensor written in place: it
      was allocated before the meter and is not charged to the step).
    * New storages are charged to the current phase's category (default ``activations``).
    * A tracked storage resized by an op (``out=`` into a too-small tensor, ``resize_``) is
      re-measured after the op.
    * Freeing: in torch 2.14 ``UntypedStorage`` Python objects support weak references and
      are *preserved* like tensors: ``tensor.untyped_storage()`` returns the same Python
      object for as long as the C++ storage lives, even after every Python handle to it is
      gone. So ``weakref.finalize`` on the storage object fires exactly when the last tensor
      (view, autograd-saved copy, ``.grad``) using that memory dies, which is when the bytes
      return to the allocator. (A finalizer on the *tensor* would be wrong: views and
      autograd's saved variables keep the storage alive after the tensor object dies.) The
      callback holds only the integer key, never the storage, so it does not keep it alive.

    Thread safety: on CUDA the autograd engine runs backward on a device thread; the dispatch
    mode is propagated there, and the bookkeeping is guarded by a re-entrant lock (a
    finalizer can fire from garbage collection in the middle of our own bookkeeping).
    """

    def __init__(
        self,
        default_category: str = "activations",
        cuda_device: torch.device | str | int | None = None,
    ) -> None:
        super().__init__()
        self._check_category(default_category)
        self._category_stack: list[str] = [default_category]
        self._storages: dict[int, tuple[str, int]] = {}  # key -> (category, nbytes)
        self._live_by_category: dict[str, int] = {c: 0 for c in CATEGORIES}
        self._live_bytes = 0
        self._peak_bytes = 0
        self._peak_breakdown: dict[str, int] = dict(self._live_by_category)
        self._lock = threading.RLock()
        self._cuda_device = None if cuda_device is None else torch.device(cuda_device)
        self.allocator_peak_bytes: int | None = None  # CUDA only, set on exit

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch otherwise wraps __torch_dispatch__ in a lazy ``torch._dynamo.disable`` whose
        # first call imports Dynamo (~1.7 s of CPU, ~100 MB per Ray worker); a step is never
        # metered compiled (``sim.client.device_config``), so the guard has nothing to guard
        return False

    # -- categories -----------------------------------------------------------------------

    @staticmethod
    def _check_category(category: str) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown memory category {category!r}; one of {CATEGORIES}")

    @property
    def category(self) -> str:
        """The category new storages are charged to right now."""
        return self._category_stack[-1]

    @contextmanager
    def phase(self, category: str) -> Iterator[None]:
        """Charge storages created inside the block to ``category`` (phases nest)."""
        self._check_category(category)
        self._category_stack.append(category)
        try:
            yield
        finally:
            self._category_stack.pop()

    # -- bookkeeping ----------------------------------------------------------------------

    def track(self, tensor: torch.Tensor, category: str) -> bool:
        """Seed the meter with an existing tensor; True if its storage was not yet counted."""
        self._check_category(category)
        storage = _storage_of(tensor)
        return storage is not None and self._add(storage, category)

    def _add(self, storage: torch.UntypedStorage, category: str) -> bool:
        key = storage._cdata
        nbytes = storage.nbytes()
        with self._lock:
            if key in self._storages:
                return False
            self._storages[key] = (category, nbytes)
            self._change(category, nbytes)
        weakref.finalize(storage, self._release, key)
        return True

    def _release(self, key: int) -> None:
        with self._lock:
            entry = self._storages.pop(key, None)
            if entry is not None:
                self._change(entry[0], -entry[1])

    def _remeasure(self, storage: torch.UntypedStorage) -> None:
        with self._lock:
            entry = self._storages.get(storage._cdata)
            if entry is not None and entry[1] != storage.nbytes():
                category, old = entry
                self._storages[storage._cdata] = (category, storage.nbytes())
                self._change(category, storage.nbytes() - old)

    def _change(self, category: str, delta_bytes: int) -> None:
        self._live_by_category[category] += delta_bytes
        self._live_bytes += delta_bytes
        if self._live_bytes > self._peak_bytes:
            self._peak_bytes = self._live_bytes
            self._peak_breakdown = dict(self._live_by_category)

    # -- the dispatch mode ----------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_inputs, _ = tree_flatten((args, kwargs))
        input_keys = set()
        for item in flat_inputs:
            if isinstance(item, torch.Tensor):
                storage = _storage_of(item)
                if storage is not None:
                    input_keys.add(storage._cdata)
        flat_outputs, _ = tree_flatten(out)
        for item in flat_outputs:
            if not isinstance(item, torch.Tensor):
                continue
            storage = _storage_of(item)
            if storage is None:
                continue
            if storage._cdata in self._storages:
                self._remeasure(storage)
            elif storage._cdata not in input_keys:
                self._add(storage, self.category)
        return out

    def __enter__(self) -> MemoryMeter:
        if self._cuda_device is not None and self._cuda_device.type == "cuda":
            torch.cuda.synchronize(self._cuda_device)
            torch.cuda.reset_peak_memory_stats(self._cuda_device)
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        super().__exit__(exc_type, exc_value, traceback)
        if self._cuda_device is not None and self._cuda_device.type == "cuda":
            # Everything on the device, including memory allocated before the meter started.
            torch.cuda.synchronize(self._cuda_device)
            self.allocator_peak_bytes = torch.cuda.max_memory_allocated(self._cuda_device)

    # -- results --------------------------------------------------------------------------

    @property
    def live_bytes(self) -> int:
        return self._live_bytes

    @property
    def live_breakdown(self) -> dict[str, int]:
        return dict(self._live_by_category)

    @property
    def peak_bytes(self) -> int:
        """The largest total of live tracked bytes seen (seeded tensors included)."""
        return self._peak_bytes

    @property
    def peak_breakdown(self) -> dict[str, int]:
        """Live bytes per category at the moment of the peak (sums to ``peak_bytes``)."""
        return dict(self._peak_breakdown)


# -- sparse storage ---------------------------------------------------------------------------


def sparse_storage_bytes(num_kept: int, num_prunable: int, num_dense_params: int) -> int:
    """Bytes to hold a pruned model's parameters sparsely.

    float32 values of the ``num_kept`` surviving prunable weights and of the
    ``num_dense_params`` never-pruned parameters (biases, norm parameters), plus the kept
    weights' positions as the mask travels (``communication.mask_position_bytes``: the
    cheaper of a bitmap or an index list, nothing when nothing is pruned).
    """
    if num_dense_params < 0:
        raise ValueError(f"need num_dense_params >= 0, got {num_dense_params}")
    return FLOAT32_BYTES * (num_kept + num_dense_params) + mask_position_bytes(
        num_kept, num_prunable
    )


def sparse_peak_bytes(breakdown: Mapping[str, int], sparse_bytes: int) -> int:
    """A measured peak with the model stored sparsely.

    The ``parameters`` (the simulator's dense buffer) and ``masks`` (its int64 index of the
    trained coordinates) categories are replaced by ``sparse_bytes``
    (:func:`sparse_storage_bytes`: kept values plus the bitmap or index list, which is all a
    device needs to address them). Assumes the compute kernels read the sparse representation
    directly (no dense copy of the weights materialised during a forward pass) and that the
    rest of the breakdown (activations, ZO buffers over the kept coordinates, inputs) is
    unchanged.
    """
    if sparse_bytes < 0:
        raise ValueError(f"sparse_bytes must be >= 0, got {sparse_bytes}")
    dense_model = breakdown.get("parameters", 0) + breakdown.get("masks", 0)
    return sum(breakdown.values()) - dense_model + sparse_bytes


# -- analytical estimate ----------------------------------------------------------------------

_CHAINS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, StagedModel)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
#: Optimizer state in units of the parameter count.
_OPTIMIZER_STATE_MULTIPLIER = {"sgd": 0, "momentum": 1, "sgd_momentum": 1, "adam": 2}
_DRY_RUN_BATCH = 2  # not 1: BatchNorm in training mode refuses one value per channel


def _per_sample_numel(value: object) -> int:
    tensors = [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
    return sum(t.numel() for t in tensors) // _DRY_RUN_BATCH


def _aliases_input(inputs: tuple, output: object) -> bool:
    """True when the module returned (a view of) its input: Identity, Flatten, in-place ReLU."""
    keys = {
        s._cdata for t in inputs if isinstance(t, torch.Tensor) if (s := _storage_of(t)) is not None
    }
    outs = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
    return bool(outs) and all((s := _storage_of(t)) is not None and s._cdata in keys for t in outs)


def _dry_run(
    model: nn.Module, input_shape: Sequence[int]
) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Per-sample element counts from one hooked forward pass.

    Returns, for each leaf module in execution order, (new output elements, elements held by
    enclosing residual blocks while it runs, extra bytes it saves for backward); and, for each
    residual block (a module with children and its own ``forward``, e.g. ``BasicBlock``), the
    elements live when it finishes: what outer blocks hold, its input, and 3x its output (the
    branch output, the sum and the activated sum all exist at once).
    """
    leaves: list[tuple[int, int, int]] = []
    block_ends: list[int] = []
    held_stack: list[int] = []
    hooks = []

    def leaf_hook(module: nn.Module, inputs: tuple, output: object) -> None:
        numel = 0 if _aliases_input(inputs, output) else _per_sample_numel(output)
        extra = INT64_BYTES * numel if isinstance(module, _MAX_POOLS) else 0  # argmax indices
        leaves.append((numel, sum(held_stack), extra))

    def block_pre_hook(module: nn.Module, inputs: tuple) -> None:
        held_stack.append(_per_sample_numel(inputs))

    def block_hook(module: nn.Module, inputs: tuple, output: object) -> None:
        block_input = held_stack.pop()
        block_ends.append(sum(held_stack) + block_input + 3 * _per_sample_numel(output))

    for module in model.modules():
        if not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(leaf_hook))
        elif module is not model and not isinstance(module, _CHAINS):
            hooks.append(module.register_forward_pre_hook(block_pre_hook))
            hooks.append(module.register_forward_hook(block_hook))
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros((_DRY_RUN_BATCH, *input_shape), device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return leaves, block_ends


def analytical_peak_bytes(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    mode: str,
    num_trained: int | None = None,
    optimizer: str = "sgd",
) -> dict[str, int]:
    """Estimated peak bytes of one local step, per category plus ``total``.

    All tensors are taken as float32; the input batch is ``batch_size`` images plus int64
    labels. ``num_trained`` (default: all parameters) is the number of trained coordinates:
    the ZO buffers' length, and the number of BP gradients (pass the parameter count for a
    masked BP step, whose gradient tensors are dense).

    ``mode="zo"`` (``zo.forward_difference``, forward passes under ``no_grad``): parameters,
    2 * num_trained floats (the base copy and direction z of ``loss_differences``), the input
    batch, and the
    largest activation working set: the input and output of one leaf module (a leaf's input
    is freed once the next leaf has run), plus the inputs of enclosing residual blocks (held
    for the skip connection); and at the end of a residual block its input plus three outputs
    (branch, sum, activated sum: the ``BasicBlock`` pattern, taken loosely for any block).
    Ignored: the K loss differences, kernel scratch, per-group norm statistics.

    ``mode="bp"`` (forward, backward, ``optimizer.step()``): parameters, gradients (as many
    as trained), optimizer state (0 for plain SGD, 1x for momentum, 2x for Adam), the input
    batch, and every leaf module's output as saved for backward: each is the input its
    consumer saves (conv, linear, norm, Hardswish and max-pool all save their input), plus
    max-pool's int64 argmax indices. In a residual block the last norm's output is not saved
    (an addition needs no inputs) but the sum is, of the same size, so the count holds;
    a projection shortcut's norm output is over-counted. Ignored: gradients w.r.t. activations
    in flight early in backward (at the measured peak they outweigh the parameter gradients not
    yet computed, so this estimate is a few percent low), norm statistics, the softmax.
    """
    if mode not in ("zo", "bp"):
        raise ValueError(f"mode must be 'zo' or 'bp', got {mode!r}")
    if optimizer not in _OPTIMIZER_STATE_MULTIPLIER:
        raise ValueError(f"optimizer must be one of {tuple(_OPTIMIZER_STATE_MULTIPLIER)}")
    num_params = sum(p.numel() for p in model.parameters())
    trained = num_params if num_trained is None else num_trained
    leaves, block_ends = _dry_run(model, input_shape)
    estimate = {
        "parameters": FLOAT32_BYTES * num_params,
        "inputs": batch_size * (FLOAT32_BYTES * math.prod(input_shape) + INT64_BYTES),
    }
    if mode == "zo":
        working_numel, previous = max(block_ends, default=0), 0
        for numel, held, _ in leaves:
            working_numel = max(working_numel, previous + numel + held)
            previous = numel or previous  # an aliasing leaf passes its input through
        estimate["zo_buffers"] = 2 * FLOAT32_BYTES * trained
        estimate["activations"] = batch_size * FLOAT32_BYTES * working_numel
    else:
        saved_bytes = sum(FLOAT32_BYTES * numel + extra for numel, _, extra in leaves)
        estimate["gradients"] = FLOAT32_BYTES * trained
        estimate["optimizer_state"] = (
            FLOAT32_BYTES * trained * _OPTIMIZER_STATE_MULTIPLIER[optimizer]
        )
        estimate["activations"] = batch_size * saved_bytes
    estimate["total"] = sum(estimate.values())
    return estimate
