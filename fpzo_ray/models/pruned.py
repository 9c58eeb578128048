"""The trained, pruned global model as a file: what a run leaves behind to be used.

A run ends by saving its final global model (the weights it evaluated last: the EMA weights
when ``training.ema_decay`` > 0) as ``model.pt``, logged as an MLflow artifact of the run. The file
stores the model *sparsely*: the flat positions of the kept coordinates and their values
(everything else is exactly zero), the non-trainable buffers, and what is needed to rebuild
the architecture (the run's configuration, the input shape, the number of classes). It holds
tensors and plain data only, so it loads with ``torch.load(weights_only=True)``.

Use::

    from fpzo_ray.models import load_pruned
    model = load_pruned("model.pt")          # an nn.Module in eval mode, pruned weights zero
    logits = model(images)                   # images: (N, C, H, W), normalised like the data

``MLFLOW_TRACKING_URI=<store> mlflow artifacts download -r <run id> -a model.pt`` fetches
it from a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "fpzo_ray.pruned_model/1"


def pruned_state(
    config: Mapping[str, Any],
    input_shape: Sequence[int],
    num_classes: int,
    flat_weights: torch.Tensor,
    kept_index: torch.Tensor,
    model: nn.Module,
    metrics: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The file's content: ``flat_weights`` (the whole flat parameter vector, pruned
    coordinates zero) reduced to ``kept_index`` and its values, plus ``model``'s buffers."""
    total = int(flat_weights.numel())
    index_dtype = torch.int32 if total < 2**31 else torch.int64
    kept = kept_index.to(torch.int64).cpu()
    return {
        "format": FORMAT,
        "config": dict(config),
        "input_shape": [int(v) for v in input_shape],
        "num_classes": int(num_classes),
        "num_parameters": total,
        "kept_index": kept.to(index_dtype),
        "kept_values": flat_weights.cpu()[kept].clone(),
        "buffers": {name: b.detach().cpu().clone() for name, b in model.named_buffers()},
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }


def save_pruned(state: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state), path)
    return path


def load_pruned(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the ``nn.Module`` saved by a run (see the module docstring), in eval mode."""
    from fpzo_ray.config import config_from_dict
    from fpzo_ray.models.build import build_model
    from fpzo_ray.models.flat import bind_flat_buffer

    state = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pruned model saved by fpzo_ray ({FORMAT})")
    model = build_model(
        config_from_dict(state["config"]), state["input_shape"], state["num_classes"]
    )
    flat, _ = bind_flat_buffer(model)
    if flat.numel() != state["num_parameters"]:
        raise ValueError(
            f"{path}: {state['num_parameters']} parameters saved, the rebuilt "
            f"model has {flat.numel()}"
        )
    with torch.no_grad():
        flat.zero_()
        flat[state["kept_index"].to(torch.int64)] = state["kept_values"]
    for name, saved in state["buffers"].items():
        model.get_buffer(name).copy_(saved)
    return model.to(map_location).eval()
