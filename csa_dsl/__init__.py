"""csa-dsl: a small compiler DSL for DeepSeek-style Compressed Sparse Attention on Hopper.

    import csa_dsl
    spec = csa_dsl.preset("v4-flash")
    fwd = csa_dsl.compile(spec, device="cuda")
    inputs = csa_dsl.random_inputs(spec, batch=1, seq_len=65536, device="cuda", seed=0)
    out, indices = fwd(**inputs, return_indices=True)
"""
from .compile import CompiledPipeline, compile, indexer_topk
from .inputs import input_signature, random_inputs, validate_inputs
from .presets import PRESET_NAMES, V32_SCALE, preset
from .schedule import Schedule, parse_bytes
from .spec import Compressor, Indexer, Pipeline, RoPE, SparseAttention, SpecError, YaRN

__version__ = "0.1.0"

__all__ = [
    "CompiledPipeline", "Compressor", "Indexer", "PRESET_NAMES", "Pipeline", "RoPE", "Schedule",
    "SparseAttention", "SpecError", "V32_SCALE", "YaRN", "compile", "indexer_topk", "input_signature",
    "parse_bytes", "preset", "random_inputs", "validate_inputs",
]
