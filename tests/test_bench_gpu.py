"""``bench gpu``: without CUDA one line and ``{"cuda": false}``; its whole code path on the CPU
(``--device cpu``), where the CPU-against-device check must find two identical runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch

from fpzo_ray.bench import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: the bench measures")
def test_without_cuda_it_says_so_and_exits_cleanly():
    out = subprocess.run(
        [sys.executable, "-m", "fpzo_ray.bench", "gpu"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "no CUDA device" in lines[0]
    assert json.loads(lines[1]) == {"cuda": False}


def test_its_code_path_runs_on_the_cpu(ray_session):
    parser = argparse.ArgumentParser()
    gpu.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--device", "cpu", "--models", "digits", "--modes", "auto", "--workers", "1"),
            *("--rounds", "1", "--warmup", "1", "--agreement-rounds", "2"),
            *("--data-root", "/nonexistent"),
        ]
    )
    result = gpu.run(args)
    assert result["cuda"] is False and result["engine"] == "ray"
    assert [(r["workers"], r["updates_per_s"] > 0) for r in result["rows"]] == [(1, True)]
    assert result["best_workers_per_gpu"] == {"digits": 1}
    assert result["cpu_cpu_max_estimate_diff"] == 0.0  # a run is a function of its seeds
    assert result["estimate_max_abs"] > 0
    accuracies = result["cpu_cpu_final_accuracy"]
    assert accuracies["cpu"] == accuracies["cpu again"]


def test_without_ray_it_measures_one_in_process_runtime(monkeypatch):
    """A bare GPU machine (PyTorch, no Ray or MLflow) still gets its figures."""
    monkeypatch.setattr(gpu, "engine_available", lambda: False)
    parser = argparse.ArgumentParser()
    gpu.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--device", "cpu", "--models", "digits", "--modes", "auto", "--workers", "1,2"),
            *("--rounds", "2", "--warmup", "1", "--agreement-rounds", "2"),
            *("--data-root", "/nonexistent"),
        ]
    )
    result = gpu.run(args)
    assert result["engine"] == "in_process"
    assert [(r["workers"], r["updates_per_s"] > 0) for r in result["rows"]] == [(1, True)]
    assert result["cpu_cpu_max_estimate_diff"] == 0.0


def test_random_images_are_cifar_shaped():
    data = gpu.random_images(side=32, train=20, test=10)
    assert data.input_shape == (3, 32, 32) and data.num_train == 20
    assert data.normalise(data.test_inputs).dtype == torch.float32
