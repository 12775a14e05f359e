"""Architecture knowledge a dependency graph cannot see (`base` describes the five kinds).

Each module here holds one architecture family's adapters; importing it registers them.
"""
from . import detection, res2net, resnest, shufflenet, swin, timm_attention, timm_gates, vit  # noqa: F401
from .base import (LayerRule, Structure, after_prune, analysis_view, class_path, clear_caches, divisor_hints,
                   export_view, find_structures, layer_rules, opaque, owned_sides, rule_of)

__all__ = ["LayerRule", "Structure", "after_prune", "analysis_view", "class_path", "clear_caches",
           "divisor_hints", "export_view", "find_structures", "layer_rules", "opaque", "owned_sides", "rule_of"]
