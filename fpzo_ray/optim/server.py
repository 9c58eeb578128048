"""The server's optimizer: average the clients' contributions, clip, step, track an EMA.

Every algorithm's server steps through it (``FederatedAlgorithm.server_step``): a ZO
algorithm feeds it the averaged gradient estimate, a FedAvg-style one the negated average
update (server SGD at rate 1 is FedAvg).

The trained vector ``weights`` holds only the kept coordinates (d of them); pruned weights are
not represented at all, so they stay exactly zero whatever the optimizer does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fpzo_ray.registry import SERVER_OPTIMIZERS


def weighted_average(estimates: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``sum_c w_c g_c / sum_c w_c``, accumulated in the order given (client-id order)."""
    total = float(sum(weights))
    if not estimates or total <= 0:
        raise ValueError("need at least one estimate with positive weight")
    out = torch.zeros_like(estimates[0])
    for estimate, weight in zip(estimates, weights):
        out.add_(estimate, alpha=weight / total)
    return out


@dataclass(frozen=True)
class ServerSettings:
    """The ``training.*`` settings a server optimizer may read."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.99)
    momentum: float = 0.9


def adam(params: list[torch.nn.Parameter], s: ServerSettings) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=s.lr, betas=s.betas)


def sgd(params: list[torch.nn.Parameter], s: ServerSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=s.lr)


def sgd_momentum(params: list[torch.nn.Parameter], s: ServerSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum)


class ServerOptimizer:
    """A torch optimizer over the kept coordinates (``training.server_optimizer``: a
    registered name or a researcher's ``make(params, settings)``), with infinity-norm
    clipping of the incoming (pseudo-)gradient and an exponential moving average of the
    weights."""

    def __init__(
        self,
        weights: torch.Tensor,
        kind: str,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.99),
        clip_inf_norm: float = 0.0,
        ema_decay: float = 0.0,
        momentum: float = 0.9,
    ) -> None:
        self.weights = torch.nn.Parameter(weights.detach().clone(), requires_grad=False)
        make = SERVER_OPTIMIZERS.load(kind)
        self.optimizer: torch.optim.Optimizer = make(
            [self.weights], ServerSettings(lr, betas, momentum)
        )
        self.clip_inf_norm = clip_inf_norm
        self.ema_decay = ema_decay
        self.ema = self.weights.detach().clone() if ema_decay > 0 else None

    def step(self, gradient_estimate: torch.Tensor) -> None:
        grad = gradient_estimate.detach().clone()
        if self.clip_inf_norm > 0:
            grad.clamp_(-self.clip_inf_norm, self.clip_inf_norm)
        self.weights.grad = grad
        self.optimizer.step()
        self.weights.grad = None
        if self.ema is not None:
            self.ema.mul_(self.ema_decay).add_(self.weights.detach(), alpha=1 - self.ema_decay)

    @property
    def eval_weights(self) -> torch.Tensor:
        """What evaluation should use: the EMA when it is on, else the current weights."""
        return self.ema if self.ema is not None else self.weights.detach()

    def state_dict(self) -> dict:
        return {
            "weights": self.weights.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "ema": None if self.ema is None else self.ema.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.weights.copy_(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["ema"] is not None:
            self.ema = state["ema"].clone()
