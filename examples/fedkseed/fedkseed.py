"""ZO federated training over a finite seed pool, in the style of FedKSeed (Qin et al.,
"Federated full-parameter tuning of billion-sized language models with communication cost
under 18 kilobytes", ICML 2024): an algorithm in a file of its own, named in ``sweep.yaml`` as
``training: {algorithm: "fedkseed:FedKSeed", args: {pool_size: 256}}``.

Server and clients share a pool of P seeds (derived from the run seed). A client's K
perturbations are drawn from the pool, so every update the server ever takes is a sum over
the P pool directions: with plain server SGD and no clipping,

    w_t = w_0 - sum_j C_j z_j,     C_j = lr * (sum over rounds of the mean scalar on seed j).

So a client never downloads weights. The server sends the P accumulated scalars C (4 P
bytes, whatever the model's size) and the client rebuilds w_t from w_0 (its own
initialisation, from the run seed) and the pool, at the price of P direction draws per round.
Uplink: K scalars, as in ZO FedSGD; the seeds are known to both sides.

Plain PyTorch on top of fpzo_ray's ZO FedSGD; the engine does not know this file exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from fpzo_ray.accounting.communication import FLOAT_BYTES, SEED_BYTES
from fpzo_ray.algorithms.base import (
    Batches,
    ClientModel,
    LocalWork,
    RoundPlan,
    Upload,
)
from fpzo_ray.config import ConfigError, RunConfig, setting
from fpzo_ray.models.staged import StageBlocks
from fpzo_ray.optim.server import ServerOptimizer
from fpzo_ray.seeding import Purpose, derive_seed
from fpzo_ray.zo.algorithms.fedsgd import ZOFedSGD


@dataclass(frozen=True)
class FedKSeedParams:
    """``training.args`` of FedKSeed."""

    pool_size: int = setting(256, ge=1, doc="P, the seeds shared by server and clients")


class FedKSeed(ZOFedSGD):
    """ZO FedSGD whose directions come from a finite seed pool; weights never go down."""

    label = "FedKSeed"
    Params = FedKSeedParams

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        size = self.params.pool_size
        self.pool = [derive_seed(cfg.seed, Purpose.ALGORITHM, 0, j) for j in range(size)]
        # server state: C, the step taken so far along each pool direction
        self.coefficients = torch.zeros(size, dtype=torch.float64)

    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        super().validate(cfg)
        rules = (
            ("training.server_optimizer", cfg.training.server_optimizer == "sgd", "sgd"),
            ("zo.clip_inf_norm", cfg.zo.clip_inf_norm == 0.0, "0 (no clipping)"),
            ("training.ema_decay", cfg.training.ema_decay == 0.0, "0"),
            ("pruning.init_scaling", cfg.pruning.init_scaling == "none", "none"),
            ("zo.perturbation_scope", cfg.zo.perturbation_scope == "full", "full"),
        )
        for field_name, holds, needed in rules:
            if not holds:
                raise ConfigError(
                    f"config error: {field_name}: FedKSeed rebuilds the model from the seed "
                    f"pool, which needs {needed}"
                )

    # -- the pool ------------------------------------------------------------------------
    def pool_indices(self, round_index: int, client_id: int) -> list[int]:
        """The K pool entries a client perturbs along in a round (uniform, with replacement)."""
        rng = np.random.default_rng(
            derive_seed(self.cfg.seed, Purpose.ALGORITHM, 1, round_index, client_id)
        )
        return rng.integers(0, len(self.pool), self.spec.num_perturbations).tolist()

    def step_seeds(self, round_index: int, client_id: int) -> list[list[int]]:
        return [[self.pool[j] for j in self.pool_indices(round_index, client_id)]]

    def rebuild(self, initial: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """``w_0 - sum_j C_j z_j``: the global model from the pool's history."""
        weights = initial.detach().cpu().clone()
        z = torch.empty_like(weights)
        for j, c in enumerate(coefficients.tolist()):
            if c != 0.0:
                weights.add_(self.spec.estimator.draw(self.pool[j], z), alpha=-c)
        return weights

    # -- round control -------------------------------------------------------------------
    def configure_round(self, round_index: int, sampled: list[int]) -> RoundPlan:
        return RoundPlan(sampled, self.coefficients.to(torch.float32))

    def download_bytes(self, num_trained: int, mask_bytes: int, payload: Any) -> int:
        return FLOAT_BYTES * len(self.pool) + mask_bytes + SEED_BYTES

    # -- client --------------------------------------------------------------------------
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
        """Rebuild the weights from the pool (the broadcast ``start`` is not used: a real
        client never receives it), then ZO FedSGD's K differences."""
        weights = self.rebuild(model.initial_weights, payload)
        model.workspace.load(weights)
        work = super().local_work(model, batches, weights, round_index, client_id)
        rebuild_flops = 3 * int(torch.count_nonzero(payload)) * weights.numel()  # draw + axpy
        return replace(work, flops=work.flops + rebuild_flops)

    # -- server --------------------------------------------------------------------------
    def contribution(
        self,
        upload: Upload,
        round_index: int,
        client_id: int,
        start: torch.Tensor,
        blocks: StageBlocks | None,
    ) -> torch.Tensor:
        """The client's estimate in pool coordinates: (1/K) sum_k scale d_k e_{j_k}."""
        assert upload.step_differences is not None
        differences = upload.step_differences[0].double()
        pooled = torch.zeros(len(self.pool), dtype=torch.float64)
        indices = torch.tensor(self.pool_indices(round_index, client_id))
        pooled.index_add_(0, indices, differences * self.spec.estimator.scale)
        return pooled / self.spec.num_perturbations

    def worker_contribution(
        self,
        work: LocalWork,
        round_index: int,
        client_id: int,
        start: torch.Tensor,
        blocks: StageBlocks | None,
    ) -> torch.Tensor:
        return self.contribution(work.upload, round_index, client_id, start, blocks)

    @property
    def server_clip_inf_norm(self) -> float:
        return 0.0

    def server_step(self, optimizer: ServerOptimizer, average: torch.Tensor) -> None:
        """SGD along the pool directions; C keeps the history the clients rebuild from."""
        lr = self.cfg.training.server_lr
        self.coefficients.add_(average, alpha=lr)
        gradient = torch.zeros(optimizer.weights.numel(), dtype=torch.float32)
        z = torch.empty_like(gradient)
        for j in torch.nonzero(average).flatten().tolist():
            gradient.add_(self.spec.estimator.draw(self.pool[j], z), alpha=float(average[j]))
        optimizer.step(gradient)

    def state_dict(self) -> dict[str, Any]:
        return {"coefficients": self.coefficients.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coefficients = state["coefficients"].clone()
