"""Device profiles, memory budgets that bite, and the virtual clock (in process, no Ray)."""

import math

import numpy as np
import pytest
import yaml

from fpzo_ray.algorithms.base import Upload
from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.data import make_partition
from fpzo_ray.sim.client import ClientRuntime
from fpzo_ray.sim.devices import (
    DeviceProfile,
    assign_devices,
    client_devices,
    load_catalog,
)
from fpzo_ray.sim.in_process import InProcessPool
from fpzo_ray.sim.messages import TrainReply
from fpzo_ray.sim.round_tally import RoundTally
from fpzo_ray.sim.server import FederatedServer

PROFILE = {"flops_per_s": 1e9, "uplink_mbit_s": 8, "downlink_mbit_s": 16, "availability": 1.0}


def _profiles(tmp_path, **memory_mb):
    path = tmp_path / "devices.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "profiles": {name: {"memory_mb": mb, **PROFILE} for name, mb in memory_mb.items()},
                "population": {name: 1 for name in memory_mb},
            }
        )
    )
    return str(path)


def test_shipped_profiles_load_and_assignment_follows_the_mix():
    catalog = load_catalog()
    assert {"mcu", "rpi_zero2w", "rpi4", "jetson_nano", "phone"} <= {
        p.name for p in catalog.profiles
    }
    assert math.isclose(sum(catalog.population.values()), 1.0)
    devices = assign_devices(catalog, 10_000, run_seed=3)
    assert np.array_equal(devices, assign_devices(catalog, 10_000, run_seed=3))
    share = (devices == catalog.index("mcu")).mean()
    assert abs(share - catalog.population["mcu"]) < 0.02


@pytest.mark.parametrize(
    "profile, match",
    [
        ({"memory_mb": -1, **PROFILE}, "small.memory_mb"),
        ({"memory_mb": 1, **{**PROFILE, "availability": 1.5}}, "small.availability"),
        ({"memory_mb": 1}, "needs exactly"),
    ],
)
def test_bad_profiles_name_the_field(tmp_path, profile, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"small": profile}, "population": {"small": 1}}))
    with pytest.raises(ConfigError, match=match):
        load_catalog(path)
    with pytest.raises(ConfigError, match="devices.population: unknown profile 'tablet'"):
        load_catalog(None, {"tablet": 1.0})


def test_device_seconds_by_hand():
    device = DeviceProfile(
        "d", memory_mb=1, flops_per_s=2e9, uplink_mbit_s=8, downlink_mbit_s=16, availability=1
    )
    # 1 MB down at 16 Mbit/s = 0.5 s; 4 GFLOP at 2 GFLOP/s = 2 s; 1 MB up at 8 Mbit/s = 1 s
    assert math.isclose(device.seconds(4e9, 1e6, 1e6), 3.5)


def _reply(client, flops, up=1_000_000, down=1_000_000):
    return TrainReply(
        client, 10, 10, 1.0, Upload(step_differences=()), None, flops, flops, up, down, 100, 100
    )


def test_virtual_clock_on_a_hand_checked_round(tmp_path):
    cfg = config_from_dict(
        {"devices": {"enabled": True, "profiles_file": _profiles(tmp_path, a=1)}}
    )
    devices = client_devices(cfg)
    # Per client: 0.5 s down + 1 s up + flops / 1e9
    tally = RoundTally(1, devices, deadline_s=0.0)
    for client, flops in ((0, 1e9), (1, 3e9), (2, 0.5e9)):
        assert tally.accept(_reply(client, flops), finite=True)
    assert math.isclose(tally.round_seconds(), 0.5 + 3 + 1)
    # With a 3 s deadline the 4.5 s client straggles and the round lasts the deadline.
    late = RoundTally(1, devices, deadline_s=3.0)
    accepted = [late.accept(_reply(c, f), finite=True) for c, f in ((0, 1e9), (1, 3e9))]
    assert accepted == [True, False]
    assert late.round_seconds() == 3.0 and late.round_metrics()["stragglers"] == 1
    # Without failures, the round ends with its slowest participant even under a deadline.
    quick = RoundTally(1, devices, deadline_s=10.0)
    quick.accept(_reply(0, 1e9), finite=True)
    assert math.isclose(quick.round_seconds(), 2.5)


def _server(digits, tmp_path, algorithm, memory_mb):
    training = {"rounds": 3, "clients_per_round": 8}
    if algorithm == "bp":
        training.update(algorithm="bp", mode="fedavg")
    cfg = config_from_dict(
        {
            "data": {"num_clients": 20},
            "training": training,
            "devices": {
                "enabled": True,
                "memory_figure": "dense",
                "profiles_file": _profiles(tmp_path, **memory_mb),
            },
        }
    )
    parts = make_partition(cfg.data, digits.train_labels, cfg.seed)
    runtime = ClientRuntime(cfg, digits, parts)
    server = FederatedServer(cfg, digits, InProcessPool(runtime), client_devices(cfg))
    server.prune()
    return server, runtime


def _peak(digits, tmp_path, algorithm):
    server, _ = _server(digits, tmp_path, algorithm, {"big": 1e6})
    return server.run_round(0)["max_client_peak_memory_bytes"]


def test_budgets_drop_exactly_the_clients_over_budget_bp_versus_zo(digits, tmp_path):
    zo_peak, bp_peak = _peak(digits, tmp_path, "zo"), _peak(digits, tmp_path, "bp")
    assert bp_peak > zo_peak
    between_mb = (zo_peak + bp_peak) / 2 / 1e6  # a device that can run ZO but not BP
    taken = {}
    for algorithm in ("zo", "bp"):
        server, _ = _server(digits, tmp_path, algorithm, {"small": between_mb, "big": 1e6})
        metrics = [server.run_round(r) for r in range(3)]
        small = {c for c in range(20) if server.devices.profile(c).name == "small"}
        records = server.records()
        oom = {r["client_id"] for r in records if r["status"] == "oom"}
        ok = {r["client_id"] for r in records if r["status"] == "ok"}
        if algorithm == "bp":
            sampled_small = {r["client_id"] for r in records} & small
            assert oom == sampled_small and oom  # exactly the small devices, every time
            assert all(
                r["peak_memory_bytes"] > r["budget_bytes"] for r in records if r["status"] == "oom"
            )
        else:
            assert not oom
        assert ok.isdisjoint(oom)
        assert sum(m["oom_clients"] for m in metrics) == len(
            [r for r in records if r["status"] == "oom"]
        )
        taken[algorithm] = sum(m["aggregated_clients"] for m in metrics)
    assert taken["zo"] > taken["bp"]


def test_unavailable_devices_are_not_dispatched(digits, tmp_path):
    path = tmp_path / "flaky.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "profiles": {"flaky": {"memory_mb": 1e5, **{**PROFILE, "availability": 0.5}}},
                "population": {"flaky": 1},
            }
        )
    )
    cfg = config_from_dict(
        {
            "data": {"num_clients": 20},
            "training": {"rounds": 4, "clients_per_round": 10},
            "devices": {"enabled": True, "profiles_file": str(path)},
        }
    )
    parts = make_partition(cfg.data, digits.train_labels, cfg.seed)
    server = FederatedServer(
        cfg, digits, InProcessPool(ClientRuntime(cfg, digits, parts)), client_devices(cfg)
    )
    server.prune()
    metrics = [server.run_round(r) for r in range(4)]
    absent = sum(m["unavailable_clients"] for m in metrics)
    assert 5 < absent < 35  # about half of 40
    assert all(m["aggregated_clients"] + m["unavailable_clients"] == 10 for m in metrics)
    assert metrics[-1]["simulated_time_s"] == pytest.approx(
        sum(m["simulated_round_s"] for m in metrics)
    )


def test_time_to_target_is_the_simulated_time_when_first_reached(digits, tmp_path):
    cfg = config_from_dict(
        {
            "data": {"num_clients": 20},
            "training": {
                "rounds": 30,
                "clients_per_round": 5,
                "eval_every": 5,
                "target_accuracy": 0.3,
            },
            "devices": {"enabled": True, "profiles_file": _profiles(tmp_path, a=1e5)},
        }
    )
    parts = make_partition(cfg.data, digits.train_labels, cfg.seed)
    server = FederatedServer(
        cfg, digits, InProcessPool(ClientRuntime(cfg, digits, parts)), client_devices(cfg)
    )
    server.prune()
    metrics = [server.run_round(r) for r in range(30)]
    first = next(m for m in metrics if m.get("test_accuracy", 0) >= 0.3)
    assert first["rounds_to_target"] == first["round"]
    assert first["time_to_target_s"] == first["simulated_time_s"]
    assert metrics[-1]["time_to_target_s"] == first["time_to_target_s"]  # it stays put


def test_non_finite_uploads_are_rejected_and_recorded(digits, monkeypatch):
    import dataclasses

    import torch

    cfg = config_from_dict(
        {"data": {"num_clients": 20}, "training": {"rounds": 3, "clients_per_round": 10}}
    )
    parts = make_partition(cfg.data, digits.train_labels, cfg.seed)
    runtime = ClientRuntime(cfg, digits, parts)
    server = FederatedServer(cfg, digits, InProcessPool(runtime))
    server.prune()
    honest = runtime.algorithm.local_work

    def poisoned(model, batches, start, round_index, client_id, shortcuts=False, payload=None):
        work = honest(model, batches, start, round_index, client_id, shortcuts, payload)
        if client_id % 2:  # odd clients upload NaN
            bad = tuple(torch.full_like(d, float("nan")) for d in work.upload.step_differences)
            work = dataclasses.replace(work, upload=Upload(step_differences=bad))
        return work

    monkeypatch.setattr(runtime.algorithm, "local_work", poisoned)
    metrics = [server.run_round(r) for r in range(3)]
    rejected = [r for r in server.records() if r["status"] == "rejected_non_finite"]
    assert rejected and all(r["client_id"] % 2 for r in rejected)
    assert sum(m["failed_clients"] for m in metrics) == len(rejected)
    assert torch.isfinite(server.global_flat_weights()).all()
