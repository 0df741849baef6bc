"""Presets: the dimensions of the published DeepSeek configs (docs/semantics.md, "Presets")."""
from __future__ import annotations

import math

from .errors import SpecError
from .spec import Compressor, Indexer, Pipeline, RoPE, SparseAttention, YaRN

# V3.2 (DSA) softmax scale: qk_head_dim 192 (128 nope + 64 rope) ** -0.5 times mscale^2,
# mscale = 0.1 * ln(rope_factor 40) + 1 (YaRN long-context attention scaling).
V32_SCALE = 192 ** -0.5 * (0.1 * math.log(40.0) + 1.0) ** 2


def _v4(name: str, heads: int, topk: int) -> Pipeline:
    rope = RoPE(dim=64, yarn=YaRN())
    return Pipeline(
        name=name,
        compressor=Compressor(ratio=4, dim=512, overlap=True, rope=rope, hadamard=False),
        indexer=Indexer(heads=64, dim=128, topk=topk,
                        compressor=Compressor(ratio=4, dim=128, overlap=True, rope=rope, hadamard=True)),
        attention=SparseAttention(heads=heads, qk_dim=512, v_dim=512, window=128, sink=True,
                                  scale=None, inverse_rope=rope),
    )


def _v32() -> Pipeline:
    return Pipeline(
        name="v3.2",
        compressor=None,
        indexer=Indexer(heads=64, dim=128, topk=2048, compressor=None),
        attention=SparseAttention(heads=128, qk_dim=576, v_dim=512, window=0, sink=False,
                                  scale=V32_SCALE, inverse_rope=None),
    )


_PRESETS = {
    "v4-flash": lambda: _v4("v4-flash", heads=64, topk=512),
    "v4-pro": lambda: _v4("v4-pro", heads=128, topk=1024),
    "v3.2": _v32,
}

PRESET_NAMES = tuple(_PRESETS)


def preset(name: str) -> Pipeline:
    """The Pipeline of a named preset: 'v4-flash', 'v4-pro' or 'v3.2'."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise SpecError(f"unknown preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}") from None
