"""ZO FedAvg: E local ZO steps per client, replayed by the server from scalars and seeds.

Client: E times, estimate from K seeded directions, clip, take a client SGD step; upload the
E x K loss differences (``training.args.upload: scalars``) or the masked dense update.
Server: the client's final weights replayed bit for bit from its scalars and the seeds (or
its dense update), the updates averaged by sample count; the negated average is the server
optimizer's pseudo-gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fpzo_ray.accounting import dense_update_upload_bytes, zo_scalar_upload_bytes
from fpzo_ray.algorithms.base import Batches, ClientModel, LocalWork, Upload
from fpzo_ray.config import setting
from fpzo_ray.models.staged import StageBlocks
from fpzo_ray.zo.algorithms.base import ZOAlgorithm, run_zo_steps
from fpzo_ray.zo.client_update import replay_local_steps


@dataclass(frozen=True)
class ZOFedAvgParams:
    """``training.args`` of ZO FedAvg."""

    upload: str = setting(
        "scalars",
        choices=("scalars", "dense_update"),
        doc="scalars: the server replays the seeds; dense_update: the masked delta",
    )


class ZOFedAvg(ZOAlgorithm):
    """Zeroth-order FedAvg with client steps."""

    label = "ZO FedAvg"
    Params = ZOFedAvgParams
    moves = True

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
        result, forward, flops = run_zo_steps(
            model, batches, self.step_seeds(round_index, client_id), self.spec, moves=True
        )
        assert result.final_weights is not None
        update = result.final_weights.cpu() - start
        if self.params.upload == "dense_update":
            return LocalWork(
                Upload(dense_update=update),
                update,
                result.base_loss,
                forward,
                flops,
                dense_update_upload_bytes(model.num_trained),
            )
        return LocalWork(
            Upload(step_differences=result.step_differences),
            update,
            result.base_loss,
            forward,
            flops,
            zo_scalar_upload_bytes(self.spec.num_perturbations, self.local_steps),
        )

    def contribution(
        self,
        upload: Upload,
        round_index: int,
        client_id: int,
        start: torch.Tensor,
        blocks: StageBlocks | None,
    ) -> torch.Tensor:
        if upload.dense_update is not None:
            return upload.dense_update
        assert upload.step_differences is not None
        final = replay_local_steps(
            start,
            upload.step_differences,
            self.step_seeds(round_index, client_id),
            self.spec,
            blocks,
        )
        return final - start
