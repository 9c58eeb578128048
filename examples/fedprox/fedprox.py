"""FedProx (Li et al., MLSys 2020) as a researcher adds it: BP FedAvg whose clients minimise
their loss plus (mu/2) |w - w_start|^2, so that many local steps on skewed data do not carry
each client far from the broadcast model. The whole algorithm is one hook of the public API
(docs/EXTENDING.md, "A BP-based algorithm"); mu = 0 is FedAvg."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpzo_ray.algorithms.bp_fedavg import BPFedAvg
from fpzo_ray.config import setting


@dataclass(frozen=True)
class ProxParams:
    mu: float = setting(0.01, ge=0.0, doc="weight of the proximal term mu/2 |w - w_start|^2")


class FedProx(BPFedAvg):
    label = "FedProx"
    Params = ProxParams

    def local_gradient(
        self, gradient: torch.Tensor, weights: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        return gradient + self.params.mu * (weights - start)
