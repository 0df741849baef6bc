"""The csa-dsl language: what a CSA forward computes (spec, presets) and how it is scheduled.

It imports nothing else of the project: the stages, the composer and the front end build on it.
"""
from .errors import InputError, PlanError, SpecError
from .presets import MODEL_COMPRESS_RATIOS, PRESET_NAMES, V32_SCALE, model_layers, preset
from .schedule import PATHS, Schedule, parse_bytes
from .spec import (LAYER_KINDS, QUANT_FORMATS, SCORE_ROUNDINGS, Compressor, Indexer, Pipeline, Quant, RoPE, SelfIndex,
                   SparseAttention, YaRN)

__all__ = [
    "Compressor", "Indexer", "InputError", "LAYER_KINDS", "MODEL_COMPRESS_RATIOS", "PATHS", "PRESET_NAMES", "Pipeline",
    "PlanError", "QUANT_FORMATS", "Quant", "RoPE", "SCORE_ROUNDINGS", "Schedule", "SelfIndex", "SparseAttention",
    "SpecError", "V32_SCALE", "YaRN", "model_layers",
    "parse_bytes", "preset",
]
