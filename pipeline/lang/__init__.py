"""The csa-dsl language: what a CSA forward computes (spec, presets) and how it is scheduled.

It imports nothing else of the project: the stages, the composer and the front end build on it.
"""
from .errors import InputError, PlanError, SpecError
from .presets import PRESET_NAMES, V32_SCALE, preset
from .schedule import PATHS, Schedule, parse_bytes
from .spec import Compressor, Indexer, Pipeline, RoPE, SparseAttention, YaRN

__all__ = [
    "Compressor", "Indexer", "InputError", "PATHS", "PRESET_NAMES", "Pipeline", "PlanError", "RoPE", "Schedule",
    "SparseAttention", "SpecError", "V32_SCALE", "YaRN", "parse_bytes", "preset",
]
