"""Shared weights for every width of any model: masking, sandwich training, extraction, save/resume."""
from __future__ import annotations

from .core import Supernet, channel_order
from .store import load_supernet, prepare_dir
from .training import SupernetTraining, sampled_widths, sandwich_step, train_supernet

__all__ = ["Supernet", "SupernetTraining", "channel_order", "load_supernet", "prepare_dir", "sampled_widths",
           "sandwich_step", "train_supernet"]
