"""ZO FedSGD, BAFFLE's protocol: one ZO evaluation per client and round, K scalars up.

Client: the K loss differences at the broadcast weights, for its K seeded directions.
Server: each client's estimate rebuilt from its differences and the same seeds, averaged by
sample count, clipped (infinity norm) and fed to the server optimizer as the gradient.
"""

from __future__ import annotations

from typing import Any

import torch

from fpzo_ray.accounting import zo_scalar_upload_bytes
from fpzo_ray.algorithms.base import Batches, ClientModel, LocalWork, Upload
from fpzo_ray.models.staged import StageBlocks
from fpzo_ray.optim.server import ServerOptimizer
from fpzo_ray.zo.algorithms.base import ZOAlgorithm, run_zo_steps
from fpzo_ray.zo.client_update import rebuild_estimate


class ZOFedSGD(ZOAlgorithm):
    """Zeroth-order FedSGD (vanilla BAFFLE on a dense model; the paper's method on a mask)."""

    label = "ZO"

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
        seeds = self.step_seeds(round_index, client_id)
        result, forward, flops = run_zo_steps(
            model, batches, seeds, self.spec, moves=False, with_estimate=shortcuts
        )
        # the estimate accumulated in the step: the server's rebuild, bit for bit, without
        # drawing the K directions a second time
        estimate = result.step_results[0].estimate if shortcuts else None
        return LocalWork(
            Upload(step_differences=result.step_differences),
            None,
            result.base_loss,
            forward,
            flops,
            zo_scalar_upload_bytes(self.spec.num_perturbations, 1),
            estimate,
        )

    def contribution(
        self,
        upload: Upload,
        round_index: int,
        client_id: int,
        start: torch.Tensor,
        blocks: StageBlocks | None,
    ) -> torch.Tensor:
        assert upload.step_differences is not None
        seeds = self.step_seeds(round_index, client_id)[0]
        return rebuild_estimate(upload.step_differences[0], seeds, self.spec, start.numel(), blocks)

    @property
    def server_clip_inf_norm(self) -> float:
        return self.cfg.zo.clip_inf_norm

    def server_step(self, optimizer: ServerOptimizer, average: torch.Tensor) -> None:
        optimizer.step(average)  # the averaged estimate is the gradient
