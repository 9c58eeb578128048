"""What the ZO algorithms share: their update spec and seeds (:class:`ZOAlgorithm`), and
the client's steps with their cost (:func:`run_zo_steps`)."""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence

from fpzo_ray.accounting import update_flops, zo_vector_flops
from fpzo_ray.algorithms.base import Batches, ClientModel, FederatedAlgorithm
from fpzo_ray.config import RunConfig
from fpzo_ray.protocol import step_seeds, zo_update_spec
from fpzo_ray.zo.client_update import ZOClientResult, ZOWorkspace, zo_client_update
from fpzo_ray.zo.estimator import ZOUpdateSpec


class ZOAlgorithm(FederatedAlgorithm, ABC):
    """A federated algorithm whose clients estimate gradients from K seeded perturbations:
    its :class:`ZOUpdateSpec` (``zo.*``; clipping on the client when the clients move) and
    the seeds of each client's steps, which the server derives as the client does."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.spec = zo_update_spec(cfg, clip_on_client=self.moves)

    def step_seeds(self, round_index: int, client_id: int) -> list[list[int]]:
        return step_seeds(self.cfg, round_index, client_id, self.local_steps)


def run_zo_steps(
    model: ClientModel,
    batches: Batches,
    seeds: Sequence[Sequence[int]],
    spec: ZOUpdateSpec,
    moves: bool,
    with_estimate: bool = False,
) -> tuple[ZOClientResult, int, int]:
    """``zo.client_update.zo_client_update`` on the client's model (``moves``: the client
    takes its local steps, FedAvg), with the forward FLOPs and the total FLOPs it cost.

    Forward FLOPs count each stage's passes (the layer-wise variant resumes the forward pass
    from a cached stage input, so later stages run more often than earlier ones); the total
    adds the vector work over the d trained coordinates and, when moving, the client steps.
    ``with_estimate`` (FedSGD only) accumulates the estimate in the step, a simulation
    shortcut not counted as the client's work.
    """
    workspace = model.workspace
    if not isinstance(workspace, ZOWorkspace):
        raise TypeError(f"ZO steps need a ZOWorkspace, got {type(workspace).__name__}")
    result = zo_client_update(workspace, batches, seeds, spec, moves, with_estimate)
    stages = model.stage_flops_per_sample
    shifts = len(spec.estimator.scheme.signs)
    forward = vector = 0
    for batch, step in zip(batches, result.step_results):
        runs = step.stage_runs or (step.num_forward_passes,) * len(stages)
        forward += int(batch[1].shape[0]) * sum(n * f for n, f in zip(runs, stages))
        vector += zo_vector_flops(len(step.loss_differences), model.num_trained, shifts, moves)
        vector += update_flops(model.num_trained) if moves else 0
    return result, forward, forward + vector
