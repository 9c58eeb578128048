"""The backpropagation baseline (BP FedAvg): the accuracy ceiling and the memory to beat."""

from fpzo_ray.bp.client_update import BPClientResult, accumulate_gradient, bp_client_update

__all__ = ["BPClientResult", "accumulate_gradient", "bp_client_update"]
