"""Foresight pruning: masks, saliencies, scopes and the iterative pruning protocol."""

from fpzo_ray.pruning.masks import Mask, keep_top_k, kept_count, random_mask
from fpzo_ray.pruning.methods import PruningMethod, keep_scores, pruning_method
from fpzo_ray.pruning.ntk_sap import fresh_parameters, ntk_sap_mask_gradient
from fpzo_ray.pruning.saliencies import (
    grasp_contribution,
    magnitude_scores,
    snip_contribution,
    synflow_scores,
)
from fpzo_ray.pruning.schedule import kept_fractions, prune_iteratively
from fpzo_ray.pruning.scopes import layerwise_top_k, random_layerwise_mask

__all__ = [
    "PruningMethod",
    "pruning_method",
    "Mask",
    "keep_top_k",
    "kept_count",
    "random_mask",
    "fresh_parameters",
    "ntk_sap_mask_gradient",
    "grasp_contribution",
    "keep_scores",
    "magnitude_scores",
    "snip_contribution",
    "synflow_scores",
    "kept_fractions",
    "prune_iteratively",
    "layerwise_top_k",
    "random_layerwise_mask",
]
