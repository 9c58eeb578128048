"""The seam of a federated training algorithm: its client half and its server half.

An algorithm is a small strategy object, in the spirit of pfl-research's
``FederatedAlgorithm`` (``simulate_one_user`` + ``process_aggregated_statistics``) and of
Flower's ``Strategy`` verbs. The engine hosts models, serves clients and keeps the round loop;
everything that differs between algorithms is one of these methods:

- round control: :meth:`FederatedAlgorithm.configure_round` (which of the sampled clients
  take part and what each receives besides the weights: a :class:`RoundPlan`) and
  :meth:`FederatedAlgorithm.download_bytes` (what that costs on the wire);
- client half: :meth:`FederatedAlgorithm.local_work` (what a client computes from the
  broadcast weights, what it uploads, what it costs);
- server half: :meth:`FederatedAlgorithm.contribution` (a client's upload in the server's
  coordinates: an estimate rebuilt from seeds, a replayed trajectory, an update),
  :meth:`FederatedAlgorithm.aggregate` (by default the sample-weighted mean),
  :meth:`FederatedAlgorithm.server_step` (the aggregate into the server optimizer) and
  :attr:`FederatedAlgorithm.server_clip_inf_norm`; any server state beyond the optimizer's
  goes through :meth:`state_dict` / :meth:`load_state_dict`, so checkpoints keep it.

Each algorithm's own hyperparameters are a frozen dataclass, its ``Params``, filled from
``training.args`` in YAML and checked like the rest of the configuration. The engine never
branches on the algorithm or its mode: a new algorithm is one file (``docs/EXTENDING.md``).

Plain PyTorch: nothing here knows Ray. Where to add one: ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fpzo_ray.accounting import train_download_bytes
from fpzo_ray.config import RunConfig, build_section
from fpzo_ray.models.staged import StageBlocks
from fpzo_ray.models.workspace import ModelWorkspace
from fpzo_ray.optim.server import ServerOptimizer, weighted_average
from fpzo_ray.wire import WireRecord

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ClientModel:
    """What a client's algorithm works on: the model with its trained coordinates
    (``workspace``, the broadcast weights loaded) and what a forward pass costs. The engine's
    workspace is a ``zo.client_update.ZOWorkspace`` (a :class:`ModelWorkspace` that also
    knows how ZO steps execute), which the ZO algorithms use and every other ignores."""

    workspace: ModelWorkspace
    initial_weights: torch.Tensor  # the trained coordinates at initialisation (the model seed's)
    forward_flops_per_sample: int
    stage_flops_per_sample: tuple[int, ...]  # per stage, for the layer-wise variant
    num_trained: int  # d


@dataclass(frozen=True)
class Upload(WireRecord):
    """What a client sends: ZO scalars (one (K,) tensor per local step) or a dense update
    of the trained coordinates; exactly one of the two."""

    step_differences: tuple[torch.Tensor, ...] | None = None
    dense_update: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        return (
            [self.dense_update]
            if self.dense_update is not None
            else list(self.step_differences or ())
        )


@dataclass(frozen=True)
class LocalWork:
    """A client's round: its upload, how it moved, its loss and its cost."""

    upload: Upload
    update: torch.Tensor | None  # final minus start weights, when the client moved
    base_loss: float  # mean over its steps of the loss at each step's start
    forward_flops: int  # forward passes only
    flops: int  # everything: forward, backward, vector work, client updates
    upload_bytes: int
    # What the server would rebuild from the upload, when the step produced it on the way
    # (a simulation shortcut, see ``FederatedAlgorithm.local_work``'s ``shortcuts``).
    contribution: torch.Tensor | None = None


@dataclass(frozen=True)
class NoParams:
    """The hyperparameters of an algorithm that has none beyond ``training.*``."""


@dataclass(frozen=True)
class RoundPlan:
    """What :meth:`FederatedAlgorithm.configure_round` decides: the clients that take part
    (a subset of the sampled ones, ascending) and what every one of them receives besides the
    weights (``payload``: anything picklable, e.g. seeds and scalars; None: nothing)."""

    clients: list[int]
    payload: Any = None


class FederatedAlgorithm(ABC):
    """One federated training algorithm (see the module docstring)."""

    #: How figures and tables name it (``report.labels``); by default the class's name.
    label: ClassVar[str]
    #: Whether a dense model under it is called "dense <label>" (the ZO baselines).
    dense_prefix: ClassVar[bool] = True
    #: Its hyperparameters (a frozen dataclass), set in YAML under ``training.args``.
    Params: ClassVar[type] = NoParams
    #: Whether its clients take ``training.local_steps`` steps a round (else one) and clip
    #: their own ZO estimates (FedAvg); FedSGD clients evaluate once and the server clips.
    moves: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "label" not in cls.__dict__:  # not the label of the class it extends
            cls.label = cls.__name__

    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        """Raise :class:`~fpzo_ray.config.ConfigError` (one line naming the field) when the
        configuration cannot run this algorithm; called before any work. By default it checks
        ``training.args`` against :attr:`Params`."""
        build_section(cls.Params, cfg.training.args, "training.args.")

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.params: Any = build_section(self.Params, cfg.training.args, "training.args.")
        self.local_steps = cfg.training.local_steps if self.moves else 1

    # -- round control -------------------------------------------------------------------
    def configure_round(self, round_index: int, sampled: list[int]) -> RoundPlan:
        """Which of the round's sampled clients take part, and what they receive besides the
        weights. By default: all of them, nothing more."""
        return RoundPlan(sampled)

    def download_bytes(self, num_trained: int, mask_bytes: int, payload: Any) -> int:
        """What one participant downloads in a round (the mask is counted once per mask
        version). By default the d trained weights, the mask and the round's seed."""
        return train_download_bytes(num_trained, mask_bytes)

    # -- client half ---------------------------------------------------------------------
    @abstractmethod
    def local_work(
        self,
        model: ClientModel,
        batches: Batches,
        start: torch.Tensor,
        round_index: int,
        client_id: int,
        shortcuts: bool = False,
        payload: Any = None,
    ) -> LocalWork:
        """The client's work from the broadcast weights ``start``, loaded in ``model`` (and
        left there); ``batches`` holds one mini-batch per local step; ``payload`` is the
        round's :attr:`RoundPlan.payload`. With ``shortcuts`` the
        step may also compute, on the way, what the server would rebuild from its upload
        (``LocalWork.contribution``); it is never asked of a step whose memory is measured,
        which must hold only what the client holds."""

    # -- server half ---------------------------------------------------------------------
    @abstractmethod
    def contribution(
        self,
        upload: Upload,
        round_index: int,
        client_id: int,
        start: torch.Tensor,
        blocks: StageBlocks | None,
    ) -> torch.Tensor:
        """The client's contribution in the server's coordinates, from its upload and the
        seeds both sides know; ``start`` is the round's broadcast weights."""

    def worker_contribution(
        self,
        work: LocalWork,
        round_index: int,
        client_id: int,
        start: torch.Tensor,
        blocks: StageBlocks | None,
    ) -> torch.Tensor:
        """The same contribution, computed where the client ran (``simulation.estimate_on:
        workers``): bit for bit what :meth:`contribution` gives from the upload. A client
        that moved already holds it as its update."""
        if work.contribution is not None:
            return work.contribution
        if work.update is not None:
            return work.update
        return self.contribution(work.upload, round_index, client_id, start, blocks)

    @property
    def server_clip_inf_norm(self) -> float:
        """Infinity-norm clamp the server optimizer applies to what :meth:`server_step`
        feeds it (0: none)."""
        return 0.0

    def aggregate(
        self, contributions: Sequence[torch.Tensor], num_samples: Sequence[float]
    ) -> torch.Tensor:
        """The round's contributions (client-id order) into one vector: by default their
        mean weighted by the clients' sample counts."""
        return weighted_average(contributions, num_samples)

    def server_step(self, optimizer: ServerOptimizer, average: torch.Tensor) -> None:
        """Turn the sample-weighted average of the contributions into a server step. By
        default the average is an update (the clients moved), whose negation is the
        pseudo-gradient: server SGD at rate 1 is FedAvg."""
        optimizer.step(-average)

    def state_dict(self) -> dict[str, Any]:
        """Server state of the algorithm beyond the optimizer's (checkpointed)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore :meth:`state_dict` (nothing to restore by default)."""
