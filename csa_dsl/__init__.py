"""csa-dsl: a small compiler DSL for DeepSeek-style Compressed Sparse Attention on Hopper.

    import csa_dsl
    spec = csa_dsl.preset("v4-flash")
    fwd = csa_dsl.compile(spec, device="cuda")
    inputs = csa_dsl.random_inputs(spec, batch=1, seq_len=65536, device="cuda", seed=0)
    out, indices = fwd(**inputs, return_indices=True)
    print(fwd.plan(65536))            # the Program that runs: fwd.execute(program, **inputs)
    cu, packed = csa_dsl.random_packed_inputs(spec, [70000, 130000, 62144], device="cuda")
    out = fwd.varlen(cu, **packed)    # a packed batch: each sequence as its own B = 1 run

This package is the front end (compile, CLI, IR printing); the language, stages, composer,
planner and interpreter live in `pipeline`, the kernels in `kernels_triton` / `kernels_tilelang`.
"""
from pipeline.composer import Packed
from pipeline.inputs import (check_finite, input_signature, pack, packed_signature, random_inputs,
                             random_packed_inputs, unpack, validate_inputs)
from pipeline.lang import (LAYER_KINDS, PATHS, PRESET_NAMES, V32_SCALE, Compressor, Indexer, InputError, Pipeline,
                           PlanError, Quant, RoPE, Schedule, SelfIndex, SparseAttention, SpecError, YaRN, model_layers,
                           parse_bytes, preset)
from pipeline.program import Program

from .compile import CompiledPipeline, compile
from .ops import indexer_topk, sparse_attention

__version__ = "0.1.0"

__all__ = [
    "CompiledPipeline", "Compressor", "Indexer", "InputError", "LAYER_KINDS", "PATHS", "PRESET_NAMES", "Packed",
    "Pipeline",
    "PlanError", "Program", "Quant", "RoPE", "Schedule", "SelfIndex", "SparseAttention", "SpecError", "V32_SCALE",
    "YaRN",
    "check_finite", "compile", "indexer_topk", "input_signature", "model_layers", "parse_bytes", "preset",
    "pack", "packed_signature", "random_inputs", "random_packed_inputs", "sparse_attention", "unpack",
    "validate_inputs",
]
