"""ZO FedSGD with server momentum on the estimate (``training.algorithm: zo_momentum``).

The clients do exactly what ZO FedSGD's do (K scalars up). The server clips the round's
averaged estimate g_t (infinity norm, ``zo.clip_inf_norm``), folds it into an exponential
moving average m_t = beta m_{t-1} + (1 - beta) g_t with beta = ``training.args.estimate_momentum``
(m_0 = 0), and feeds m_t to the server optimizer. Averaging over rounds lowers the variance of
a K-direction estimate at the price of staleness; with beta = 0 it is ZO FedSGD bit for bit.
The moving average is server state: it is checkpointed with the run.

This file is the worked example of ``docs/ARCHITECTURE.md`` ("Adding a federated algorithm").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fpzo_ray.config import RunConfig, setting
from fpzo_ray.optim.server import ServerOptimizer
from fpzo_ray.zo.algorithms.fedsgd import ZOFedSGD


@dataclass(frozen=True)
class ZOFedSGDMomentumParams:
    """``training.args`` of ZO FedSGD with estimate momentum."""

    estimate_momentum: float = setting(
        0.9,
        ge=0.0,
        lt=1.0,
        doc="beta of the moving average of the clipped estimates (0 = ZO FedSGD)",
    )


class ZOFedSGDMomentum(ZOFedSGD):
    """ZO FedSGD whose server steps with a moving average of the clipped estimates."""

    label = "ZO + estimate momentum"
    Params = ZOFedSGDMomentumParams

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.beta = self.params.estimate_momentum
        self.momentum: torch.Tensor | None = None

    @property
    def server_clip_inf_norm(self) -> float:
        return 0.0  # clipped here, before the average, not by the optimizer

    def server_step(self, optimizer: ServerOptimizer, average: torch.Tensor) -> None:
        clip = self.cfg.zo.clip_inf_norm
        estimate = average.clamp(-clip, clip) if clip > 0 else average
        if self.momentum is None:
            self.momentum = torch.zeros_like(estimate)
        self.momentum.mul_(self.beta).add_(estimate, alpha=1.0 - self.beta)
        optimizer.step(self.momentum)

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": None if self.momentum is None else self.momentum.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        momentum = state.get("momentum")
        self.momentum = None if momentum is None else momentum.clone()
