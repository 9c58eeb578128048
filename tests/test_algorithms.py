"""The federated algorithms as strategies: the registry, and the worked example of
docs/ARCHITECTURE.md (ZO FedSGD with server momentum on the estimate), in one process."""

from __future__ import annotations

import pytest
import torch

from fpzo_ray.algorithms import algorithm_class, algorithm_for
from fpzo_ray.algorithms.base import FederatedAlgorithm
from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.data import federated_data
from fpzo_ray.registry import ALGORITHMS
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.in_process import InProcessPool, run_in_process
from fpzo_ray.sim.server import FederatedServer
from fpzo_ray.zo.algorithms.fedsgd_momentum import ZOFedSGDMomentum

SMALL = {
    "data": {"num_clients": 16},
    "pruning": {"iterations": 2, "clients_per_iteration": 4, "sparsity": 0.5},
    "zo": {"num_perturbations": 4},
    "training": {"rounds": 4, "clients_per_round": 5},
}


def _cfg(**training):
    return config_from_dict({**SMALL, "training": {**SMALL["training"], **training}})


def _without_time(metrics):
    return [{k: v for k, v in m.items() if not k.startswith("time_")} for m in metrics]


def test_every_registered_pair_builds_its_strategy():
    for algorithm, modes in ALGORITHMS.items():
        for mode in modes:
            cfg = _cfg(algorithm=algorithm, mode=mode)
            strategy = algorithm_for(cfg)
            assert isinstance(strategy, FederatedAlgorithm)
            assert type(strategy) is algorithm_class(algorithm, mode)
            assert strategy.label


def test_an_unregistered_pair_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="training.mode: got 'fedsgd', algorithm bp runs fedavg"):
        _cfg(algorithm="bp", mode="fedsgd")


def test_estimate_momentum_zero_is_zo_fedsgd_bit_for_bit():
    plain = _cfg()
    momentum = _cfg(algorithm="zo_momentum", args={"estimate_momentum": 0.0})
    assert _without_time(run_in_process(momentum, *federated_data(momentum))) == _without_time(
        run_in_process(plain, *federated_data(plain))
    )


class _Recorder:
    """Stands in for the server optimizer: records what it is asked to step with."""

    def __init__(self):
        self.steps = []

    def step(self, gradient):
        self.steps.append(gradient.clone())


def test_the_server_steps_with_the_moving_average_of_the_clipped_estimates():
    strategy = ZOFedSGDMomentum(_cfg(algorithm="zo_momentum", args={"estimate_momentum": 0.75}))
    assert strategy.server_clip_inf_norm == 0.0  # it clips before averaging, not after
    clip = strategy.cfg.zo.clip_inf_norm
    recorder = _Recorder()
    g1, g2 = torch.tensor([1.0, -0.1, 0.2]), torch.tensor([-0.5, 0.3, 0.0])
    strategy.server_step(recorder, g1)
    strategy.server_step(recorder, g2)
    m1 = 0.25 * g1.clamp(-clip, clip)
    m2 = 0.75 * m1 + 0.25 * g2.clamp(-clip, clip)
    torch.testing.assert_close(recorder.steps[0], m1, rtol=0, atol=1e-7)
    torch.testing.assert_close(recorder.steps[1], m2, rtol=0, atol=1e-7)


def test_the_moving_average_is_checkpointed_and_a_resumed_run_is_unchanged():
    cfg = _cfg(
        algorithm="zo_momentum",
        args={"estimate_momentum": 0.9},
        server_optimizer="sgd",
        server_lr=0.05,
    )
    dataset, partition = federated_data(cfg)

    def server():
        return FederatedServer(cfg, dataset, InProcessPool(ClientRuntime(cfg, dataset, partition)))

    straight = server()
    straight.prune()
    expected = [straight.run_round(r) for r in range(4)]
    first = server()
    first.prune()
    head = [first.run_round(r) for r in range(2)]
    state = first.state_dict()
    assert state["algorithm"]["momentum"].shape == (first.num_trained,)
    resumed = server()
    resumed.load_state_dict(state)
    tail = [resumed.run_round(r) for r in range(2, 4)]
    assert _without_time(head + tail) == _without_time(expected)
    # and it is not ZO FedSGD: the same run without momentum ends elsewhere
    plain = config_from_dict(
        {**SMALL, "training": {**SMALL["training"], "server_optimizer": "sgd", "server_lr": 0.05}}
    )
    assert _without_time(run_in_process(plain, dataset, partition)) != _without_time(expected)
