"""Presets: the dimensions of the published DeepSeek configs (docs/semantics.md, "Presets")."""
from __future__ import annotations

import math

from .errors import SpecError
from .spec import Compressor, Indexer, Pipeline, Quant, RoPE, SelfIndex, SparseAttention, YaRN

# V3.2 (DSA) softmax scale: qk_head_dim 192 (128 nope + 64 rope) ** -0.5 times mscale^2,
# mscale = 0.1 * ln(rope_factor 40) + 1 (YaRN long-context attention scaling).
V32_SCALE = 192 ** -0.5 * (0.1 * math.log(40.0) + 1.0) ** 2

# The quantise-dequantise steps of the official inference code (docs/semantics.md section 5), on in
# the model presets as they are in the models; the "-bf16" presets leave them out (the exact bf16 math).
V4_KV_QUANT = Quant("e4m3", 64)        # the 448 non-RoPE channels of every attention KV row
V4_INDEX_QUANT = Quant("e2m1", 32)     # idx_q and every compressed index key, all 128 channels
V32_INDEX_QUANT = Quant("e4m3", 128)   # V3.2's FP8 indexer: one scale per 128-channel row


def _v4(name: str, heads: int, topk: int, quant: bool = True) -> Pipeline:
    rope = RoPE(dim=64, yarn=YaRN())
    return Pipeline(
        name=name,
        compressor=Compressor(ratio=4, dim=512, overlap=True, rope=rope, hadamard=False),
        indexer=Indexer(heads=64, dim=128, topk=topk,
                        compressor=Compressor(ratio=4, dim=128, overlap=True, rope=rope, hadamard=True),
                        quant=V4_INDEX_QUANT if quant else None),
        attention=SparseAttention(heads=heads, qk_dim=512, v_dim=512, window=128, sink=True,
                                  scale=None, inverse_rope=rope, kv_quant=V4_KV_QUANT if quant else None),
    )


def _v4_hca(name: str, heads: int) -> Pipeline:
    """V4's heavily compressed layers (compress_ratio 128): no overlap, no indexer, every visible row."""
    rope = RoPE(dim=64, yarn=YaRN())
    return Pipeline(
        name=name,
        compressor=Compressor(ratio=128, dim=512, overlap=False, rope=rope, hadamard=False),
        indexer=None,
        attention=SparseAttention(heads=heads, qk_dim=512, v_dim=512, window=128, sink=True,
                                  scale=None, inverse_rope=rope, kv_quant=V4_KV_QUANT),
    )


def _v4_selfindex(name: str, heads: int, topk: int) -> Pipeline:
    """V4's CSA dimensions with the 1-bit self-index in place of the lightning indexer (no indexer inputs)."""
    return _v4(name, heads, topk).replace(indexer=SelfIndex(topk=topk))


def _v4_window(name: str, heads: int) -> Pipeline:
    """V4's window-only layers (compress_ratio 0): the 128-token window, RoPE base 10,000 without YaRN."""
    return Pipeline(
        name=name,
        compressor=None,
        indexer=None,
        attention=SparseAttention(heads=heads, qk_dim=512, v_dim=512, window=128, sink=True,
                                  scale=None, inverse_rope=RoPE(dim=64, yarn=None, base=10000.0),
                                  kv_quant=V4_KV_QUANT),
    )


def _v32(name: str = "v3.2", quant: bool = True) -> Pipeline:
    return Pipeline(
        name=name,
        compressor=None,
        indexer=Indexer(heads=64, dim=128, topk=2048, compressor=None, quant=V32_INDEX_QUANT if quant else None),
        attention=SparseAttention(heads=128, qk_dim=576, v_dim=512, window=0, sink=False,
                                  scale=V32_SCALE, inverse_rope=None),
    )


_PRESETS = {
    "v4-flash": lambda: _v4("v4-flash", heads=64, topk=512),
    "v4-pro": lambda: _v4("v4-pro", heads=128, topk=1024),
    "v3.2": _v32,
    "v4-flash-hca": lambda: _v4_hca("v4-flash-hca", heads=64),
    "v4-pro-hca": lambda: _v4_hca("v4-pro-hca", heads=128),
    "v4-window": lambda: _v4_window("v4-window", heads=64),
    "v4-flash-selfindex": lambda: _v4_selfindex("v4-flash-selfindex", heads=64, topk=512),
    # the exact bf16 math: no quantisation step (faster to compare with, slower to run)
    "v4-flash-bf16": lambda: _v4("v4-flash-bf16", heads=64, topk=512, quant=False),
    "v4-pro-bf16": lambda: _v4("v4-pro-bf16", heads=128, topk=1024, quant=False),
    "v3.2-bf16": lambda: _v32("v3.2-bf16", quant=False),
}

# A model's attention layers in config order, as `compress_ratios` lists them (0: window-only,
# 4: CSA, 128: HCA). DeepSeek-V4-Flash has 20 CSA, 20 HCA and 3 window-only layers; the order
# below (the window-only layers first, then CSA and HCA alternating) is our reading of it: pass
# the config's own list to model_layers(compress_ratios=...) where it differs.
MODEL_COMPRESS_RATIOS = {
    "v4-flash": (0, 0, 0) + (4, 128) * 20,
}
# the preset of each compress ratio, per model
_LAYER_PRESETS = {
    "v4-flash": {0: "v4-window", 4: "v4-flash", 128: "v4-flash-hca"},
}

PRESET_NAMES = tuple(_PRESETS)


def preset(name: str) -> Pipeline:
    """The Pipeline of a named preset (PRESET_NAMES: 'v4-flash', 'v4-pro', 'v3.2', 'v4-flash-hca', ...)."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise SpecError(f"unknown preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}") from None


def model_layers(model: str, compress_ratios=None) -> list:
    """One Pipeline per attention layer of `model` in config order (MODEL_COMPRESS_RATIOS, or the
    config's own `compress_ratios` list: 0 window-only, 4 CSA, 128 HCA)."""
    if model not in _LAYER_PRESETS:
        raise SpecError(f"model_layers knows the layer kinds of {sorted(_LAYER_PRESETS)}, not {model!r}")
    kinds = _LAYER_PRESETS[model]
    ratios = MODEL_COMPRESS_RATIOS[model] if compress_ratios is None else tuple(compress_ratios)
    bad = sorted({r for r in ratios if r not in kinds})
    if bad or not ratios:
        raise SpecError(f"compress_ratios of {model} must be a non-empty list of {sorted(kinds)}, got "
                        f"{bad or 'an empty list'}")
    return [preset(kinds[r]) for r in ratios]
