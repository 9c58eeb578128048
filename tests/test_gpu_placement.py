"""GPU placement, checked on a CPU machine with Ray's logical GPUs (the session's Ray has
``conftest.LOGICAL_GPUS``; Ray schedules and assigns them, nothing touches CUDA): the
bundles a run reserves, how many workers share each GPU, each actor's ``ray.get_gpu_ids()``,
and the server's share (the refusal of GPU shares no cluster could hold:
``tests/test_hostile_input.py``)."""

from __future__ import annotations

from collections import Counter

from fpzo_ray.config import config_from_dict
from fpzo_ray.sim.ray.federation import bundles
from fpzo_ray.sim.ray.placement import actor_options, server_device


def _cfg(**simulation):
    return config_from_dict({"simulation": {"device": "cuda", **simulation}})


def test_a_cuda_run_reserves_gpu_shares_for_its_server_and_workers():
    cfg = _cfg(num_workers=4, worker_gpus=0.25, server_gpus=0.1)
    driver, server, *workers = bundles(cfg)
    assert "GPU" not in driver
    assert server == {"CPU": cfg.simulation.server_cpus, "GPU": 0.1}
    assert workers == [{"CPU": cfg.simulation.worker_cpus, "GPU": 0.25}] * 4
    assert server_device(cfg.simulation).type == "cuda"


def test_a_server_without_a_gpu_share_stays_on_the_cpu():
    cfg = _cfg(num_workers=2, worker_gpus=0.5, server_gpus=0.0)
    assert "GPU" not in bundles(cfg)[1]
    assert server_device(cfg.simulation).type == "cpu"
    assert actor_options(bundles(cfg)[1])["num_gpus"] == 0


def test_a_cpu_run_reserves_no_gpu_for_its_server():
    cfg = config_from_dict({"simulation": {"server_gpus": 0.5}})
    assert "GPU" not in bundles(cfg)[1]
    assert server_device(cfg.simulation).type == "cpu"


def _gpu_ids_in_placement_group(ray, cfg):
    """Each actor's GPU ids when a run's bundles are reserved as one placement group (as a
    sweep's trial reserves them) and one probe actor per bundle asks for that bundle's
    resources with the options the run's actors use."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    @ray.remote
    class Probe:
        def gpu_ids(self):
            return [str(i) for i in ray.get_gpu_ids()]

    group_bundles = bundles(cfg)
    group = placement_group(group_bundles, strategy="PACK")
    ray.get(group.ready(), timeout=60)
    try:
        probes = [
            Probe.options(
                **actor_options(bundle),
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=index
                ),
            ).remote()
            for index, bundle in enumerate(group_bundles)
            if index > 0  # the driver's bundle: the trial's own process
        ]
        ids = ray.get([p.gpu_ids.remote() for p in probes], timeout=60)
        for probe in probes:
            ray.kill(probe)
        return ids[0], ids[1:]
    finally:
        remove_placement_group(group)


def test_workers_share_each_logical_gpu_by_their_share(ray_session):
    """Four workers at half a GPU on two logical GPUs: two on each, one id each; the server
    on the CPU has none."""
    cfg = _cfg(num_workers=4, worker_gpus=0.5, server_gpus=0.0, worker_cpus=0.1)
    server, workers = _gpu_ids_in_placement_group(ray_session, cfg)
    assert server == []
    assert all(len(ids) == 1 for ids in workers)
    assert sorted(Counter(ids[0] for ids in workers).values()) == [2, 2]


def test_the_server_holds_a_gpu_share_beside_the_workers(ray_session):
    cfg = _cfg(num_workers=3, worker_gpus=0.5, server_gpus=0.5, worker_cpus=0.1)
    server, workers = _gpu_ids_in_placement_group(ray_session, cfg)
    assert len(server) == 1
    per_gpu = Counter([server[0]] + [ids[0] for ids in workers])
    assert sorted(per_gpu.values()) == [2, 2]  # 4 half shares on 2 GPUs: never 3 on one
