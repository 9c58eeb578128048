"""Storage: where sweeps and runs persist (``fpzo_ray.storage``), the checks made before any
work (``fpzo_ray.cluster_checks``), and which failures restart a trial. No Ray: pyarrow's
local and in-memory filesystems, a closed port, exceptions built by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import pytest
import yaml
from studies import free_port

from fpzo_ray.cluster_checks import check_tracking_uri
from fpzo_ray.config import ConfigError
from fpzo_ray.storage import (
    DEFAULT_OPTION,
    STORAGE_ENV,
    LocalCopy,
    _s3_endpoint_from_environment,
    check_writable,
    open_storage,
    resolve_storage,
)
from fpzo_ray.sweep.callbacks import lost_to_the_cluster
from fpzo_ray.sweep.spec import load_sweep
from fpzo_ray.tracking import tracking_uri_of


def test_a_local_path_is_absolute_and_files_go_through_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_storage("results/store")
    assert store.is_local and store.location == str(tmp_path / "results" / "store")
    trial = store.child("exp", "grid", "t1")
    trial.write_text("config.yaml", "a: 1")
    assert (tmp_path / "results/store/exp/grid/t1/config.yaml").read_text() == "a: 1"
    assert store.child("exp", "grid").listdir() == ["t1"]
    assert trial.parent().location == store.child("exp", "grid").location
    assert trial.exists("config.yaml") and not trial.exists("model.pt")
    trial.delete()
    assert not trial.exists() and store.child("exp", "grid").listdir() == []


def test_a_uri_keeps_its_query_when_joined():
    store = open_storage("mock://bucket/prefix?param=1")
    assert not store.is_local and store.root == "prefix"  # pyarrow's mock has no buckets
    child = store.child("exp", "grid")
    assert child.location == "mock://bucket/prefix/exp/grid?param=1"
    assert child.parent().parent().location == store.location
    child.write_text("x.txt", "hello")
    assert store.child("exp", "grid").read_text("x.txt") == "hello"


@pytest.mark.parametrize(
    "location, option",
    [("nosuch://bucket/x", "--storage"), ("  ", "--storage"), ("nosuch://b", "FPZO_STORAGE")],
)
def test_a_storage_pyarrow_cannot_open_is_one_line_naming_the_option(location, option):
    with pytest.raises(ConfigError) as err:
        open_storage(location, option)
    message = str(err.value)
    assert message.startswith(f"config error: {option}: ") and "\n" not in message


def test_the_s3_endpoint_comes_from_the_uri_else_the_aws_variables(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.local:9000")
    assert _s3_endpoint_from_environment("s3://b/p") == (
        "s3://b/p?endpoint_override=minio.local%3A9000&scheme=http"
    )
    named = "s3://b/p?endpoint_override=other:1&scheme=https"
    assert _s3_endpoint_from_environment(named) == named  # the URI's own wins
    assert _s3_endpoint_from_environment("gs://b/p") == "gs://b/p"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert _s3_endpoint_from_environment("s3://b/p") == "s3://b/p"


def test_the_option_wins_over_the_sweep_file_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "env"))
    default = tmp_path / "results" / "ray_results"
    assert resolve_storage(str(tmp_path / "opt"), "mock://b/f", default).location.endswith("opt")
    assert resolve_storage(None, "mock://b/f", default).option == "storage (sweep file)"
    assert resolve_storage(None, None, default).option == STORAGE_ENV
    monkeypatch.delenv(STORAGE_ENV)
    chosen = resolve_storage(None, None, default)
    assert chosen.location == str(default) and chosen.option == DEFAULT_OPTION


def test_a_storage_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as err:
        check_writable(open_storage(blocker / "below"))
    assert str(err.value).startswith(f"config error: --storage: {blocker / 'below'}: cannot be")
    check_writable(open_storage(tmp_path / "fine"))
    assert list((tmp_path / "fine").iterdir()) == []  # the probe file is gone


def test_a_local_copy_of_a_bucket_pushes_and_pulls(tmp_path):
    bucket = open_storage("mock://bucket/exp")
    copy = LocalCopy(bucket, tmp_path / "local")
    (copy.path / "trials.csv").write_text("t")
    for name in ("checkpoint_000001", "checkpoint_000002"):
        (copy.path / name).mkdir()
        (copy.path / name / "server_state.pt").write_text(name)
    copy.push()
    assert bucket.listdir() == ["checkpoint_000001", "checkpoint_000002", "trials.csv"]
    (copy.path / "checkpoint_000001" / "server_state.pt").unlink()
    (copy.path / "checkpoint_000001").rmdir()
    copy.push(drop_missing="checkpoint_")  # what the run folder does after a checkpoint
    assert bucket.listdir() == ["checkpoint_000002", "trials.csv"]

    fresh = LocalCopy(bucket, tmp_path / "fresh_head")
    fresh.pull()
    assert sorted(p.name for p in fresh.path.iterdir()) == ["trials.csv"]
    fresh.pull(recursive=True)
    assert (fresh.path / "checkpoint_000002" / "server_state.pt").read_text() == (
        "checkpoint_000002"
    )


def test_a_local_copy_of_a_local_folder_is_that_folder(tmp_path):
    copy = LocalCopy(open_storage(tmp_path / "shared"), tmp_path / "elsewhere")
    assert copy.path == tmp_path / "shared" and not (tmp_path / "elsewhere").exists()
    copy.push()
    copy.pull()


def test_the_sweep_file_names_storage_and_restarts(tmp_path):
    path = tmp_path / "s.yaml"
    base = {"training": {"rounds": 2, "clients_per_round": 4}, "data": {"num_clients": 12}}
    path.write_text(yaml.safe_dump({"base": base, "storage": "s3://b/p", "max_failures": 0}))
    spec = load_sweep(path)
    assert spec.storage == "s3://b/p" and spec.max_failures == 0
    path.write_text(yaml.safe_dump({"base": base}))
    assert load_sweep(path).max_failures == 3 and load_sweep(path).storage is None
    for bad, named in (({"storage": 3}, "storage"), ({"max_failures": -1}, "max_failures")):
        path.write_text(yaml.safe_dump({"base": base, **bad}))
        with pytest.raises(ConfigError, match=f"^config error: {named}: "):
            load_sweep(path)


def test_a_tracking_server_that_does_not_answer_is_refused_in_one_line():
    port = free_port()  # nothing listens there
    with pytest.raises(ConfigError) as err:
        check_tracking_uri(f"http://127.0.0.1:{port}", timeout_s=2)
    message = str(err.value)
    assert message.startswith(
        f"config error: MLFLOW_TRACKING_URI: no MLflow tracking server answers at "
        f"http://127.0.0.1:{port} ("
    )
    assert "\n" not in message and "clusters/mlflow-server.sh" in message
    check_tracking_uri("sqlite:////nonexistent/mlflow.db")  # the driver opens those itself


def test_a_resumed_sweep_logs_where_it_logged_before(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "mlflow.db"
    db.write_text("")
    assert tracking_uri_of(tmp_path / "r", f"sqlite:///{db}") == f"sqlite:///{db}"
    assert tracking_uri_of(tmp_path / "r", "http://team:5000") == "http://team:5000"
    assert tracking_uri_of(tmp_path / "r", None) == f"sqlite:///{tmp_path / 'r' / 'mlflow.db'}"
    with pytest.raises(ConfigError, match="^config error: --resume: the sweep logged to"):
        tracking_uri_of(tmp_path / "r", f"sqlite:///{tmp_path / 'lost_head.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    assert tracking_uri_of(tmp_path / "r", f"sqlite:///{db}") == "http://elsewhere:5000"


def _failed_trial(tmp_path: Path, error: BaseException) -> SimpleNamespace:
    saved = tmp_path / "error.pkl"
    saved.write_bytes(cloudpickle.dumps(error))
    return SimpleNamespace(pickled_error_file=str(saved), get_pickled_error=lambda: None)


def test_only_the_clusters_failures_count_as_lost(tmp_path):
    from ray.exceptions import ActorDiedError, NodeDiedError, RayTaskError, WorkerCrashedError

    lost = [ActorDiedError(), NodeDiedError("node gone"), WorkerCrashedError()]
    lost.append(RayTaskError("federated_trial", "traceback", ActorDiedError()))
    # what the trial raises when its server actor's node is gone and the error is wrapped:
    # the cause is not pickled with it, its trace names it
    trace = "Traceback ...\nray.exceptions.ActorDiedError: The actor died unexpectedly"
    lost.append(RayTaskError("federated_trial", trace, RuntimeError("the server failed")))
    for error in lost:
        assert lost_to_the_cluster(_failed_trial(tmp_path, error)), repr(error)
    own = [ValueError("bad"), RayTaskError("federated_trial", "traceback", ValueError("bad"))]
    for error in own:
        assert not lost_to_the_cluster(_failed_trial(tmp_path, error)), repr(error)
    nothing = SimpleNamespace(pickled_error_file=None, get_pickled_error=lambda: None)
    assert not lost_to_the_cluster(nothing)
