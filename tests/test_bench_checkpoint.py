"""bench checkpoint: its storage rows measure a real round trip to a local path and to an S3
endpoint (moto's server, started by the bench), with the keys its JSON promises."""

from __future__ import annotations

import argparse

import pytest

from fpzo_ray.bench import checkpoint


@pytest.mark.slow
def test_bench_checkpoint_times_a_local_path_against_an_s3_endpoint(tmp_path):
    pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
    args = argparse.Namespace(
        data_root=str(tmp_path),  # no MNIST there: the bundled digits
        rounds=3,
        sweep_repeats=0,
        storage_passes=2,
        s3_endpoint=None,
    )
    out = checkpoint.run(args)
    rows = {row["storage"]: row for row in out["storage_rows"]}
    assert set(rows) == {"local", "s3"}
    assert rows["local"]["bytes"] == rows["s3"]["bytes"] > 0
    for row in rows.values():
        assert 0 < row["persist_ms_spread"][0] <= row["persist_ms"] <= row["persist_ms_spread"][1]
        assert row["read_ms"] > 0
    low, high = out["s3_over_local"]["spread"]
    assert 0 < low <= out["s3_over_local"]["median"] <= high
    assert out["s3_persist_overhead_at_default"] > 0
