"""What a run costs: FLOPs and bytes on the wire (plain PyTorch, no Ray)."""

from fpzo_ray.accounting.communication import (
    pruning_download_bytes,
    pruning_upload_bytes,
    zo_download_bytes,
    zo_upload_bytes,
)
from fpzo_ray.accounting.flops import LayerFlops, forward_flops, layer_flops

__all__ = ["LayerFlops", "forward_flops", "layer_flops", "pruning_download_bytes",
           "pruning_upload_bytes", "zo_download_bytes", "zo_upload_bytes"]
