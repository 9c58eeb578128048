"""The cluster configurations are validated the way Ray and KubeRay would read them."""

from pathlib import Path

import pytest
import yaml

CLUSTERS = Path(__file__).resolve().parents[1] / "clusters"


@pytest.mark.parametrize("name", ["aws-cpu.yaml", "aws-gpu.yaml"])
def test_cluster_launcher_configs_pass_rays_own_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTERS / name).read_text())
    prepared = prepare_config(config)
    validate_config(prepared)  # Ray's JSON schema plus its consistency checks
    assert config["head_node_type"] in config["available_node_types"]
    commands = " ".join(config["setup_commands"])
    assert "pip install" in commands and "fpzo_ray" in commands
    if "gpu" in name:
        assert any(
            t.get("resources", {}).get("GPU") for t in config["available_node_types"].values()
        )
    # Ray 2.60's token authentication: the token reaches every node, every node uses it.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
    # `ray job stop` gives the sweep time to close its runs (Ray's default is 3 s).
    assert "RAY_JOB_STOP_WAIT_TIME_S=30" in " ".join(config["head_start_ray_commands"])


def test_a_broken_cluster_config_is_rejected():
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTERS / "aws-cpu.yaml").read_text())
    config["max_workerz"] = 3
    with pytest.raises(ValidationError):
        validate_config(prepare_config(config))


def test_kuberay_rayjob_manifest_has_what_kuberay_requires():
    job = yaml.safe_load((CLUSTERS / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m fpzo_ray.sweep")
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["authOptions"] == {"mode": "token"}  # KubeRay >= 1.5.1 makes the Secret
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] and head["resources"]["limits"]["cpu"]
    assert {"name": "RAY_JOB_STOP_WAIT_TIME_S", "value": "30"} in head["env"]
    for group in cluster["workerGroupSpecs"]:
        assert (
            group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        )
        assert group["template"]["spec"]["containers"][0]["image"]
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert "MLFLOW_TRACKING_URI" in env
