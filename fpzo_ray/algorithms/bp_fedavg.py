"""BP FedAvg, the accuracy ceiling and the memory floor to beat: E local SGD steps with
backpropagation under the mask, the masked dense update uploaded and averaged.

A BP-based variant is a subclass: :meth:`BPFedAvg.local_gradient` changes the gradient of
each local step (FedProx's proximal term, ``docs/EXTENDING.md``), :meth:`aggregate` and
:meth:`server_step` (from ``FederatedAlgorithm``) what the server does with the updates."""

from __future__ import annotations

from typing import Any

import torch

from fpzo_ray.accounting import bp_step_flops, dense_update_upload_bytes
from fpzo_ray.algorithms.base import Batches, ClientModel, FederatedAlgorithm, LocalWork, Upload
from fpzo_ray.bp import bp_client_update
from fpzo_ray.models.staged import StageBlocks


class BPFedAvg(FederatedAlgorithm):
    """Backpropagation FedAvg (dense, or under any mask)."""

    label = "BP FedAvg"
    dense_prefix = False
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
        ws, t = model.workspace, self.cfg.training
        result = bp_client_update(
            ws.model,
            ws.layout,
            ws.flat,
            ws.kept_index,
            batches,
            t.client_lr,
            t.client_momentum,
            t.bp_microbatch_size,
            self.local_gradient,
            ws.loss,
        )
        update = result.final_weights.cpu() - start
        forward = sum(int(y.shape[0]) for _, y in batches) * model.forward_flops_per_sample
        flops = sum(
            bp_step_flops(int(y.shape[0]), model.forward_flops_per_sample, model.num_trained)
            for _, y in batches
        )
        return LocalWork(
            Upload(dense_update=update),
            update,
            result.base_loss,
            forward,
            flops,
            dense_update_upload_bytes(model.num_trained),
        )

    def local_gradient(
        self, gradient: torch.Tensor, weights: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        """The gradient a local step takes, from the loss's ``gradient`` at ``weights`` (the
        client's current trained coordinates; ``start``: the broadcast ones). FedAvg takes
        the loss's own; override it for a variant (FedProx: ``gradient + mu * (weights -
        start)``)."""
        return gradient

    def contribution(
        self,
        upload: Upload,
        round_index: int,
        client_id: int,
        start: torch.Tensor,
        blocks: StageBlocks | None,
    ) -> torch.Tensor:
        assert upload.dense_update is not None
        return upload.dense_update
