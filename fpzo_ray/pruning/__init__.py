"""Foresight pruning: masks, saliencies and the iterative (federated) pruning protocol."""

from fpzo_ray.pruning.masks import Mask, keep_top_k, kept_count, random_mask
from fpzo_ray.pruning.ntk_sap import fresh_parameters, ntk_sap_mask_gradient
from fpzo_ray.pruning.schedule import kept_fractions, prune_iteratively

__all__ = ["Mask", "keep_top_k", "kept_count", "random_mask", "fresh_parameters",
           "ntk_sap_mask_gradient", "kept_fractions", "prune_iteratively"]
