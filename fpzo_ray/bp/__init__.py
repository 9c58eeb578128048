"""The backpropagation baseline (BP FedAvg): the accuracy ceiling and the memory to beat."""

from fpzo_ray.bp.client_update import BPClientResult, bp_client_update

__all__ = ["BPClientResult", "bp_client_update"]
