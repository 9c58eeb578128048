"""What a run costs: FLOPs, bytes on the wire, memory (plain PyTorch, no Ray)."""

from fpzo_ray.accounting.communication import (
    dense_update_upload_bytes,
    evaluation_download_bytes,
    evaluation_upload_bytes,
    pruning_download_bytes,
    pruning_upload_bytes,
    statistics_bytes,
    train_download_bytes,
    zo_scalar_upload_bytes,
)
from fpzo_ray.accounting.flops import (
    LayerFlops,
    bp_step_flops,
    forward_flops,
    layer_flops,
    stage_forward_flops,
    update_flops,
    zo_vector_flops,
)

__all__ = [
    "LayerFlops",
    "bp_step_flops",
    "forward_flops",
    "layer_flops",
    "stage_forward_flops",
    "update_flops",
    "zo_vector_flops",
    "dense_update_upload_bytes",
    "evaluation_download_bytes",
    "evaluation_upload_bytes",
    "pruning_download_bytes",
    "pruning_upload_bytes",
    "statistics_bytes",
    "train_download_bytes",
    "zo_scalar_upload_bytes",
]
