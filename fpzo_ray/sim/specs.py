"""Translate the run configuration into the specs of the plain-PyTorch algorithms."""

from __future__ import annotations

from fpzo_ray.config import RunConfig
from fpzo_ray.zo.client_update import ZOUpdateSpec
from fpzo_ray.zo.estimator import EstimatorSpec


def zo_update_spec(cfg: RunConfig) -> ZOUpdateSpec:
    """What clients and server must agree on about a client's ZO work.

    Clipping: in FedSGD the server clips the averaged estimate (BAFFLE); in FedAvg each
    client clips its own local estimates before its local step (and the replay does too).
    """
    fedavg = cfg.training.mode == "fedavg"
    return ZOUpdateSpec(
        estimator=EstimatorSpec(cfg.zo.estimator, cfg.zo.direction, cfg.zo.sigma),
        perturbation_scope=cfg.zo.perturbation_scope, batching=cfg.zo.batching,
        local_steps=cfg.training.local_steps if fedavg else 1,
        client_lr=cfg.training.client_lr, client_momentum=cfg.training.client_momentum,
        clip_inf_norm=cfg.zo.clip_inf_norm if fedavg else 0.0,
        microbatch_size=cfg.zo.microbatch_size)
