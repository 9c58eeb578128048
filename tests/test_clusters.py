"""The cluster configurations are validated the way Ray and KubeRay would read them."""

import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

CLUSTERS = Path(__file__).resolve().parents[1] / "clusters"


def _environment_of(command: str) -> dict[str, str]:
    """The variables a shell command line sets for its command (``A=1 B=2 cmd ...``)."""
    env = {}
    for word in shlex.split(command):
        name, equals, value = word.partition("=")
        if not (equals and name.isidentifier()):
            break
        env[name] = value
    return env


def _ray_start_environment(commands: list[str]) -> dict[str, str]:
    [start] = [c for c in commands if "ray start" in c]
    return _environment_of(start)


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


@pytest.mark.parametrize("name", ["aws-cpu.yaml", "aws-gpu.yaml"])
def test_aws_nodes_share_storage_in_s3_and_the_head_logs_to_a_tracking_server(name):
    """The nodes share no disk: every node's Ray (and so the job's driver and the trials)
    gets FPZO_STORAGE in S3, the workers an instance profile to write there, and the head an
    MLflow tracking server (the driver is the one process that logs to it)."""
    config = yaml.safe_load((CLUSTERS / name).read_text())
    head = _ray_start_environment(config["head_start_ray_commands"])
    worker = _ray_start_environment(config["worker_start_ray_commands"])
    assert head["FPZO_STORAGE"].startswith("s3://")
    assert worker["FPZO_STORAGE"] == head["FPZO_STORAGE"]
    assert head["MLFLOW_TRACKING_URI"].startswith("http://")
    assert head["RAY_AUTH_MODE"] == worker["RAY_AUTH_MODE"] == "token"
    for type_name, node_type in config["available_node_types"].items():
        if type_name != config["head_node_type"]:  # Ray gives only the head a profile
            assert node_type["node_config"]["IamInstanceProfile"]["Name"]
    header = (CLUSTERS / name).read_text()
    assert "iam:PassRole" in header and "clusters/mlflow-server.sh" in header


def test_a_broken_cluster_config_is_rejected():
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTERS / "aws-cpu.yaml").read_text())
    config["max_workerz"] = 3
    with pytest.raises(ValidationError):
        validate_config(prepare_config(config))


def _kuberay_rayjob():
    return yaml.safe_load((CLUSTERS / "kuberay-rayjob.yaml").read_text())


def test_kuberay_rayjob_manifest_has_what_kuberay_requires():
    job = _kuberay_rayjob()
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


def _mounts(pod_spec: dict, claim: str) -> set[str]:
    """Where each container of a pod mounts the PersistentVolumeClaim ``claim``."""
    volumes = {
        v["name"]
        for v in pod_spec.get("volumes", [])
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    }
    return {
        m["mountPath"]
        for c in pod_spec["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] in volumes
    }


def test_kuberay_pods_share_a_readwritemany_volume_for_trials_and_results():
    """Trials run on any worker pod and the head pod goes with the job: the storage and the
    results are on a ReadWriteMany claim that the head and every worker mount at one path,
    and the driver logs to an MLflow tracking server."""
    [claim] = list(yaml.safe_load_all((CLUSTERS / "kuberay-pvc.yaml").read_text()))
    assert claim["apiVersion"] == "v1" and claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    name = claim["metadata"]["name"]

    spec = _kuberay_rayjob()["spec"]
    cluster = spec["rayClusterSpec"]
    head_mounts = _mounts(cluster["headGroupSpec"]["template"]["spec"], name)
    assert len(head_mounts) == 1
    for group in cluster["workerGroupSpecs"]:
        assert _mounts(group["template"]["spec"], name) == head_mounts
    mount = PurePosixPath(head_mounts.pop())

    entrypoint = shlex.split(spec["entrypoint"])
    storage = entrypoint[entrypoint.index("--storage") + 1]
    assert storage.startswith("s3://") or PurePosixPath(storage).is_relative_to(mount)
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert PurePosixPath(env["FPZO_RESULTS_DIR"]).is_relative_to(mount)
    assert env["MLFLOW_TRACKING_URI"].startswith(("http://", "https://"))
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "MLFLOW_TRACKING_URI", "value": env["MLFLOW_TRACKING_URI"]} in head["env"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        ([], "--artifacts"),
        (["--artifacts", "art"], "--data"),
        (["--artifacts", "art", "--data", "pg", "--db-uri", "postgresql://h/db"], "--db-uri"),
        (["--artifacts", "art", "--db-uri", "mysql://h/db"], "--db-uri"),
        (["--artifacts", "art", "--db-uri", "postgresql://h/db", "--pg-port", "5433"], "--pg-port"),
        (["--artifacts", "art", "--data", "pg", "--port", "99999"], "--port"),
        (["--artifacts", "art", "--data", "pg", "--pg-port=x"], "--pg-port"),
        (["--artifacts", "art", "--data", "p g"], "--data"),
        (["--artifacts", "--data", "pg"], "--artifacts"),
        (["--bogus"], "--bogus"),
    ],
)
def test_mlflow_server_script_refuses_bad_arguments_in_one_line(tmp_path, args, flag):
    """clusters/mlflow-server.sh: an error in the arguments is one line naming the flag and
    exit status 2, before anything starts or is created."""
    done = subprocess.run(
        ["bash", str(CLUSTERS / "mlflow-server.sh"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and flag in done.stderr
    assert list(tmp_path.iterdir()) == []
