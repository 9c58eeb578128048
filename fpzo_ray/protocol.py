"""What the server and every client must agree on, as functions of the run configuration.

A simulated client and the server never exchange seeds, schedules or hyperparameters: each
side computes them from the configuration both hold. Whatever both sides use lives here, in
one Ray-free module: who takes part in a round or a pruning iteration, which mini-batch a
client draws, the seeds of its perturbations and of its pruning draws, and the specification
of its ZO work (difference scheme, direction kind, K, sigma, clipping, ...). How many local
steps a client takes is its algorithm's (``algorithms.base.FederatedAlgorithm.moves``).
"""

from __future__ import annotations

import numpy as np

from fpzo_ray.config import RunConfig
from fpzo_ray.registry import DIFFERENCE_SCHEMES, DIRECTION_KINDS
from fpzo_ray.seeding import Purpose, derive_seed
from fpzo_ray.zo import perturbation_seeds
from fpzo_ray.zo.estimator import EstimatorSpec, ZOUpdateSpec


def sample_clients(
    run_seed: int, purpose: Purpose, index: int, num_clients: int, count: int
) -> list[int]:
    """``count`` distinct client ids for round (or iteration) ``index``, ascending."""
    rng = np.random.default_rng(derive_seed(run_seed, purpose, index))
    return sorted(int(c) for c in rng.choice(num_clients, size=count, replace=False))


def round_participants(cfg: RunConfig, round_index: int) -> list[int]:
    """The clients sampled for training round ``round_index`` (0-based), ascending."""
    return sample_clients(
        cfg.seed,
        Purpose.CLIENT_SAMPLING,
        round_index,
        cfg.data.num_clients,
        cfg.training.clients_per_round,
    )


def pruning_participants(cfg: RunConfig, iteration: int) -> list[int]:
    """The clients sampled for pruning iteration ``iteration``, ascending."""
    return sample_clients(
        cfg.seed,
        Purpose.PRUNING_SAMPLING,
        iteration,
        cfg.data.num_clients,
        cfg.pruning.clients_per_iteration,
    )


def evaluation_participants(cfg: RunConfig, round_index: int) -> list[int]:
    """The clients that score the global model on their held-out data after round
    ``round_index`` (``task.federated_eval_clients``), ascending; none without."""
    return sample_clients(
        cfg.seed,
        Purpose.EVALUATION_SAMPLING,
        round_index,
        cfg.data.num_clients,
        cfg.task.federated_eval_clients,
    )


def minibatch_indices(
    run_seed: int,
    purpose: Purpose,
    index: int,
    client_id: int,
    step: int,
    partition: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """A seeded mini-batch of the client's partition, without replacement (the whole
    partition when it is no larger than the batch)."""
    if partition.shape[0] <= batch_size:
        return partition
    rng = np.random.default_rng(derive_seed(run_seed, purpose, index, client_id, step))
    return np.sort(rng.choice(partition, size=batch_size, replace=False))


def step_seeds(
    cfg: RunConfig, round_index: int, client_id: int, local_steps: int
) -> list[list[int]]:
    """The K perturbation seeds of each of a client's ``local_steps`` steps in a round."""
    return [
        perturbation_seeds(cfg.seed, round_index, client_id, step, cfg.zo.num_perturbations)
        for step in range(local_steps)
    ]


def pruning_draw_seeds(cfg: RunConfig, iteration: int, client_id: int) -> list[int]:
    """The seeds of a client's ``pruning.draws_per_client`` saliency draws in an iteration."""
    return [
        derive_seed(cfg.seed, Purpose.PRUNING_DRAW, iteration, client_id, r)
        for r in range(cfg.pruning.draws_per_client)
    ]


def zo_update_spec(cfg: RunConfig, clip_on_client: bool) -> ZOUpdateSpec:
    """The specification of a client's ZO work, shared by the client that runs it and the
    server that rebuilds (FedSGD) or replays (FedAvg) it from the uploaded scalars.

    Clipping: in FedSGD the server clips the averaged estimate (BAFFLE), so the clients do
    not; in FedAvg each client clips its own local estimates before its local step (and the
    replay does too): ``clip_on_client``, the algorithm's choice.
    """
    return ZOUpdateSpec(
        estimator=EstimatorSpec(
            scheme=DIFFERENCE_SCHEMES.load(cfg.zo.estimator),
            direction=DIRECTION_KINDS.load(cfg.zo.direction),
            sigma=cfg.zo.sigma,
            generator=cfg.zo.generator,
        ),
        num_perturbations=cfg.zo.num_perturbations,
        perturbation_scope=cfg.zo.perturbation_scope,
        batching=cfg.zo.batching,
        chunk_size=cfg.zo.chunk_size,
        client_lr=cfg.training.client_lr,
        client_momentum=cfg.training.client_momentum,
        clip_inf_norm=cfg.zo.clip_inf_norm if clip_on_client else 0.0,
        microbatch_size=cfg.zo.microbatch_size,
        dropout=cfg.zo.dropout,
    )
