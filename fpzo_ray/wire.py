"""Pickling for the records that cross process boundaries (broadcasts, replies, uploads).

Ray pickles task arguments and results. A torch tensor pickles through torch's own storage
serialisation (about 85 us a small tensor here), a NumPy array as a protocol-5 buffer that
Ray moves out of band (about 10 us). A round moves a few tensors per client, so a
:class:`WireRecord` sends its CPU tensor fields (and tuples of them) as arrays and turns them
back into tensors on arrival: the same values, bit for bit, for less per-round overhead.
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from typing import Any, ClassVar

import numpy as np
import torch


class _Array:
    """A tensor travelling as an array (so arrays that were arrays stay arrays)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Array, (self.array,))


def _to_wire(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.requires_grad:
        return _Array(value.numpy())
    if isinstance(value, tuple):
        return tuple(_to_wire(v) for v in value)
    return value


def _from_wire(value: Any, borrowed: bool = False) -> Any:
    if isinstance(value, _Array):
        array = value.array
        if array.flags.writeable:
            return torch.from_numpy(array)
        # Ray hands out-of-band buffers over read-only (zero-copy from the object store).
        if not borrowed:
            return torch.from_numpy(array.copy())
        with warnings.catch_warnings():  # torch warns that the tensor is not writable
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)
    if isinstance(value, tuple):
        return tuple(_from_wire(v, borrowed) for v in value)
    return value


class WireRecord:
    """Mixin for (frozen) dataclasses whose tensors travel as NumPy arrays.

    A tensor that arrives in read-only memory is copied, except in the fields named in
    ``BORROWED``: those are only ever read (the broadcast weights, which every worker copies
    into its own flat buffer at once), so they stay views of the object store and the weights
    are copied once per worker and round, not twice.
    """

    BORROWED: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: _to_wire(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, _from_wire(value, name in self.BORROWED))
