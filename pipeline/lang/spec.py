"""The declarative pipeline spec: what a CSA forward computes, never how.

Every stage is a frozen dataclass. Inconsistencies are rejected at construction
with a `SpecError` that says what is wrong and how to fix it, so a bad spec never
reaches a kernel. Specs print readably (`str(spec)`) and round-trip through
`to_dict()` / `from_dict()` and `to_json()` / `from_json()`.

How the pipeline is executed (chunk sizes, memory budget, which path) lives in
`pipeline.lang.schedule.Schedule`, a separate object (algorithm apart from schedule).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import SpecError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_pow2(x: int) -> bool:
    return x >= 1 and (x & (x - 1)) == 0


def _check_int(owner: str, name: str, value, minimum: int = 1) -> None:
    _check(_is_int(value), f"{owner}.{name} must be an int, got {value!r} ({type(value).__name__})")
    _check(value >= minimum, f"{owner}.{name} must be >= {minimum}, got {value}")


def _check_multiple(owner: str, name: str, value: int, of: int, why: str) -> None:
    if value % of:
        lo, hi = value // of * of, (value // of + 1) * of
        hint = f"{lo} or {hi}" if lo else f"{hi}"
        raise SpecError(f"{owner}.{name} = {value} is not a multiple of {of} ({why}); use e.g. {hint}")


@dataclass(frozen=True)
class YaRN:
    """YaRN frequency scaling of RoPE (DeepSeek-V4's compressed-attention layers)."""

    base: float = 160000.0
    factor: float = 16.0
    original_seq_len: int = 65536
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def __post_init__(self):
        _check(isinstance(self.base, (int, float)) and self.base > 1,
               f"YaRN.base must be a number > 1, got {self.base!r}")
        _check(isinstance(self.factor, (int, float)) and self.factor >= 1,
               f"YaRN.factor must be >= 1 (1 disables the scaling), got {self.factor!r}")
        _check_int("YaRN", "original_seq_len", self.original_seq_len, 0)
        _check(isinstance(self.beta_fast, (int, float)) and isinstance(self.beta_slow, (int, float))
               and self.beta_fast > self.beta_slow > 0,
               f"YaRN needs beta_fast > beta_slow > 0, got beta_fast={self.beta_fast}, beta_slow={self.beta_slow}")


@dataclass(frozen=True)
class RoPE:
    """Rotary embedding on the LAST `dim` channels of a row, interleaved (complex) pairs."""

    dim: int = 64
    yarn: Optional[YaRN] = field(default_factory=YaRN)
    base: float = 160000.0  # used only when yarn is None

    def __post_init__(self):
        _check_int("RoPE", "dim", self.dim, 2)
        _check(self.dim % 2 == 0, f"RoPE.dim must be even (channels rotate in pairs), got {self.dim}")
        if self.yarn is not None:
            _check(isinstance(self.yarn, YaRN), f"RoPE.yarn must be a YaRN or None, got {type(self.yarn).__name__}")

    @property
    def theta(self) -> float:
        return self.yarn.base if self.yarn is not None else self.base


QUANT_FORMATS = {
    "e4m3": "FP8 e4m3: 4 significant bits, largest 448, amax floor 1e-4",
    "e2m1": "FP4 e2m1: grid 0, 0.5, 1, 1.5, 2, 3, 4, 6, amax floor 6 * 2^-126",
}


@dataclass(frozen=True)
class Quant:
    """A quantise-dequantise step of the official inference code (docs/semantics.md section 5): each block
    of `block` channels goes onto the `format`'s grid times a power-of-two scale
    2^ceil(log2(amax / qmax)), rounded to nearest even, and back; the tensor stays bf16."""

    format: str = "e4m3"
    block: int = 64

    def __post_init__(self):
        _check(self.format in QUANT_FORMATS,
               f"Quant.format must be one of {sorted(QUANT_FORMATS)}, got {self.format!r}")
        _check_int("Quant", "block", self.block, 1)
        _check(_is_pow2(self.block) and self.block <= 1024,
               f"Quant.block must be a power of two in 1..1024 (a block is a register tile), got {self.block}; "
               f"DeepSeek-V4 uses 64 (FP8) and 32 (FP4)")


def _check_quant(owner: str, q, channels: int, what: str) -> None:
    if q is None:
        return
    _check(isinstance(q, Quant), f"{owner} must be a Quant or None, got {type(q).__name__}")
    _check(channels > 0 and channels % q.block == 0,
           f"{owner}.block = {q.block} does not divide the {channels} quantised channels ({what}); use a block "
           f"that divides {channels}")


@dataclass(frozen=True)
class Compressor:
    """Gated pooling of every `ratio` tokens into one compressed row.

    With `overlap`, entry i pools tokens [m*i - m, m*i + m) through 2m slots, its
    inputs carry c = 2 halves of `dim` channels (previous block, own block).
    Then RMSNorm, RoPE at position i*m on the last `rope.dim` channels and, for an
    indexer's compressor, an orthonormal Hadamard rotation of the whole row.
    """

    ratio: int = 4
    dim: int = 512
    overlap: bool = True
    rope: Optional[RoPE] = field(default_factory=RoPE)
    hadamard: bool = False
    norm_eps: float = 1e-6

    def __post_init__(self):
        _check_int("Compressor", "ratio", self.ratio, 1)
        _check(_is_pow2(self.ratio) and self.ratio <= 128,
               f"Compressor.ratio must be a power of two in 1..128 (the pooling slots are a power-of-two "
               f"tile), got {self.ratio}; DeepSeek-V4 uses 4")
        _check_int("Compressor", "dim", self.dim, 16)
        _check_multiple("Compressor", "dim", self.dim, 16, "tensor-core tiles are 16 wide")
        _check(isinstance(self.overlap, bool), f"Compressor.overlap must be a bool, got {self.overlap!r}")
        _check(isinstance(self.hadamard, bool), f"Compressor.hadamard must be a bool, got {self.hadamard!r}")
        if self.rope is not None:
            _check(isinstance(self.rope, RoPE), f"Compressor.rope must be a RoPE or None, got {type(self.rope).__name__}")
            _check(self.rope.dim <= self.dim,
                   f"Compressor.rope.dim = {self.rope.dim} is larger than the row dim {self.dim}; "
                   f"RoPE covers the last rope.dim channels, so use rope.dim <= {self.dim}")
        if self.hadamard:
            _check(_is_pow2(self.dim),
                   f"Compressor.hadamard needs a power-of-two dim (Sylvester Hadamard), got dim={self.dim}; "
                   f"use {1 << (self.dim - 1).bit_length()} or hadamard=False")
        _check(isinstance(self.norm_eps, (int, float)) and 0 < self.norm_eps < 1,
               f"Compressor.norm_eps must be in (0, 1), got {self.norm_eps!r}")

    @property
    def coff(self) -> int:
        """c: how many `dim`-wide halves each token contributes (2 with overlap)."""
        return 2 if self.overlap else 1

    @property
    def slots(self) -> int:
        return self.coff * self.ratio


SCORE_ROUNDINGS = {
    "fp32": "each head's dot, the weighted terms and the head sum stay fp32 (csa-dsl's default)",
    "bf16": "as the official V4 inference code: each head's dot rounded to bf16, ReLU, times the bf16-rounded "
            "head weight with the product rounded to bf16, the head sum (fp32) rounded to bf16",
}


@dataclass(frozen=True)
class Indexer:
    """Lightning indexer: score[s,t] = sum_h w[s,h] * ReLU(q[s,h,:] . k[t,:]); keep the top-k."""

    heads: int = 64
    dim: int = 128
    topk: int = 512
    compressor: Optional[Compressor] = None
    # quantise-dequantise idx_q (per head) and every index key, all `dim` channels (V4: FP4 e2m1 in blocks
    # of 32, V3.2: FP8 e4m3, one block per row); the score then multiplies the packed values (FP4 steps' on FP8
    # tensor cores, exactly; FP8 steps' as bf16 unless fp8_mma)
    quant: Optional[Quant] = None
    # how the score is rounded (SCORE_ROUNDINGS, docs/semantics.md): "bf16" reproduces the official code's
    # bf16 score and so its ranking up to the order of ties (ties then abound: a row's K-th score is usually
    # shared); the selection keeps its rule, ties to the smaller row
    score_rounding: str = "fp32"
    # V3.2's e4m3 operands (quant Quant("e4m3", ...)) multiplied on FP8 tensor cores, as V3.2's indexer kernels
    # multiply them (DeepGEMM's fp8_mqa_logits), instead of as bf16 (exact): faster, but Hopper's FP8 accumulator
    # keeps fewer bits than fp32, so near-tied rows may rank otherwise than under the exact scores
    # (docs/semantics.md)
    fp8_mma: bool = False

    def __post_init__(self):
        _check_int("Indexer", "heads", self.heads, 1)
        _check_int("Indexer", "dim", self.dim, 16)
        _check_multiple("Indexer", "dim", self.dim, 16, "the score runs on tensor cores")
        _check_int("Indexer", "topk", self.topk, 1)
        if self.compressor is not None:
            _check(isinstance(self.compressor, Compressor),
                   f"Indexer.compressor must be a Compressor or None, got {type(self.compressor).__name__}")
            _check(self.compressor.dim == self.dim,
                   f"Indexer.compressor.dim = {self.compressor.dim} must equal Indexer.dim = {self.dim} "
                   f"(the compressed rows are the index keys)")
        _check_quant("Indexer.quant", self.quant, self.dim, "every channel of idx_q and of the index keys")
        check_score_options(self.score_rounding, self.fp8_mma, self.quant)


def check_score_options(score_rounding: str, fp8_mma: bool, quant: Optional[Quant]) -> None:
    """Indexer.score_rounding and Indexer.fp8_mma against the indexer's `quant`: the spec's check, which the
    standalone indexer (composer.compose_indexer, whose sizes need not be a spec's) makes too."""
    _check(score_rounding in SCORE_ROUNDINGS,
           f"Indexer.score_rounding must be one of {sorted(SCORE_ROUNDINGS)}, got {score_rounding!r}")
    _check(isinstance(fp8_mma, bool), f"Indexer.fp8_mma must be a bool, got {fp8_mma!r}")
    if fp8_mma:
        _check(quant is not None and quant.format == "e4m3",
               "Indexer.fp8_mma is for e4m3-quantised operands (V3.2's, Indexer.quant = Quant('e4m3', 128)), "
               "which otherwise multiply as bf16; "
               + ("V4's FP4 operands multiply on FP8 tensor cores anyway (exactly)" if quant is not None
                  else "bf16 operands (quant None) have no FP8 form"))


@dataclass(frozen=True)
class SelfIndex:
    """1-bit self-index (the seed paper "Self-Indexing KVCache"; docs/semantics.md section 7): the
    attention's own keys index themselves. Row t's code is sign(K_t) (1 bit per channel, sign(0) = +1)
    and alpha_t = mean |K_t|; score[s,t] = alpha_t * (sum_h q[s,h,:]) . sign(K_t); keep the top-k.
    No learned projection and no indexer inputs."""

    topk: int = 512

    def __post_init__(self):
        _check_int("SelfIndex", "topk", self.topk, 1)


@dataclass(frozen=True)
class SparseAttention:
    """MQA over one latent KV head: sliding window + selected compressed rows, optional sink."""

    heads: int = 64
    qk_dim: int = 512
    v_dim: int = 512
    window: int = 128
    sink: bool = True
    scale: Optional[float] = None  # None: qk_dim ** -0.5
    inverse_rope: Optional[RoPE] = field(default_factory=RoPE)
    # quantise-dequantise the non-RoPE channels (kv_quant_channels) of every KV row the attention reads:
    # the raw `kv` rows and every compressed row (V4: FP8 e4m3 in blocks of 64)
    kv_quant: Optional[Quant] = None

    def __post_init__(self):
        _check_int("SparseAttention", "heads", self.heads, 1)
        _check(self.heads <= 128, f"SparseAttention.heads = {self.heads}: at most 128 query heads share one "
                                  f"latent KV head here; split the heads over several pipelines")
        _check_int("SparseAttention", "qk_dim", self.qk_dim, 16)
        _check_multiple("SparseAttention", "qk_dim", self.qk_dim, 16, "tensor-core tiles are 16 wide")
        _check_int("SparseAttention", "v_dim", self.v_dim, 16)
        _check_multiple("SparseAttention", "v_dim", self.v_dim, 16, "tensor-core tiles are 16 wide")
        _check(self.v_dim <= self.qk_dim,
               f"SparseAttention.v_dim = {self.v_dim} > qk_dim = {self.qk_dim}: values are the first v_dim "
               f"channels of the same latent row, so v_dim <= qk_dim")
        _check_int("SparseAttention", "window", self.window, 0)
        _check(self.window <= 4096, f"SparseAttention.window = {self.window} is larger than 4096; "
                                    f"a sliding window that long is not a sparse pattern")
        _check(isinstance(self.sink, bool), f"SparseAttention.sink must be a bool, got {self.sink!r}")
        if self.scale is not None:
            _check(isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0,
                   f"SparseAttention.scale must be a positive finite number or None (qk_dim**-0.5), got {self.scale!r}")
        if self.inverse_rope is not None:
            _check(isinstance(self.inverse_rope, RoPE),
                   f"SparseAttention.inverse_rope must be a RoPE or None, got {type(self.inverse_rope).__name__}")
            _check(self.inverse_rope.dim <= self.v_dim,
                   f"SparseAttention.inverse_rope.dim = {self.inverse_rope.dim} is larger than v_dim = {self.v_dim}; "
                   f"the inverse RoPE acts on the last dims of the output, so use dim <= {self.v_dim}")
        _check_quant("SparseAttention.kv_quant", self.kv_quant, self.kv_quant_channels,
                     f"the first qk_dim - RoPE dim = {self.qk_dim} - "
                     f"{self.qk_dim - self.kv_quant_channels} channels of every KV row")

    @property
    def softmax_scale(self) -> float:
        return float(self.scale) if self.scale is not None else self.qk_dim ** -0.5

    @property
    def kv_quant_channels(self) -> int:
        """The channels kv_quant covers: all but the RoPE channels at the end of each KV row (the inverse
        RoPE's dim; the rotated channels stay bf16)."""
        return self.qk_dim - (self.inverse_rope.dim if self.inverse_rope is not None else 0)


LAYER_KINDS = {
    "csa": "compressor -> lightning indexer -> top-k -> sparse attention (DeepSeek-V4, m = 4)",
    "dsa": "lightning indexer over raw rows -> top-k -> sparse attention (DeepSeek-V3.2, no compressor)",
    "hca": "compressor -> every visible compressed row + window -> attention (DeepSeek-V4, m = 128)",
    "window": "sliding window alone -> attention (DeepSeek-V4's window-only layers)",
}


@dataclass(frozen=True)
class Pipeline:
    """One attention layer: compressor -> indexer -> top-k -> sparse attention, wired together.

    Which stages are present says which layer it is (`layer`, docs/semantics.md sections 1-4, 6):
      compressor and indexer     CSA (DeepSeek-V4, m = 4): the indexer picks top-k compressed rows
      indexer, no compressor     DSA (DeepSeek-V3.2): the indexer reads uncompressed keys `idx_k` and
                                 the selected ids are raw token rows
      compressor, no indexer     HCA (DeepSeek-V4, m = 128): every visible compressed row is attended
      neither                    window-only: the sliding window alone
    """

    attention: SparseAttention
    indexer: Optional[Indexer | SelfIndex] = None
    compressor: Optional[Compressor] = None
    name: str = "custom"

    def __post_init__(self):
        _check(isinstance(self.attention, SparseAttention),
               f"Pipeline.attention must be a SparseAttention, got {type(self.attention).__name__}")
        _check(self.indexer is None or isinstance(self.indexer, (Indexer, SelfIndex)),
               f"Pipeline.indexer must be an Indexer, a SelfIndex or None (no indexer: HCA or window-only), got "
               f"{type(self.indexer).__name__}")
        _check(isinstance(self.name, str) and self.name, "Pipeline.name must be a non-empty string")
        a, ix, c = self.attention, self.indexer, self.compressor
        if c is not None:
            _check(isinstance(c, Compressor),
                   f"Pipeline.compressor must be a Compressor or None, got {type(c).__name__}")
            _check(c.dim == a.qk_dim,
                   f"Pipeline.compressor.dim = {c.dim} must equal SparseAttention.qk_dim = {a.qk_dim} "
                   f"(compressed rows are keys of the same latent KV head)")
            if a.kv_quant is not None:
                crd = c.rope.dim if c.rope is not None else 0
                _check(a.qk_dim - crd == a.kv_quant_channels,
                       f"SparseAttention.kv_quant leaves the last {a.qk_dim - a.kv_quant_channels} channels (the "
                       f"inverse RoPE's) in bf16, but the compressor rotates the last {crd}; give both RoPEs one dim")
        if ix is None:
            if c is None:
                _check(a.window >= 1,
                       "Pipeline with neither compressor nor indexer is a window-only layer, but "
                       "SparseAttention.window = 0 leaves it nothing to attend; set window >= 1 (DeepSeek-V4: 128), "
                       "or add a Compressor (HCA) or an Indexer (DSA)")
            return
        if isinstance(ix, SelfIndex):
            _check(a.qk_dim % 32 == 0,
                   f"SelfIndex packs the sign of every key channel, 32 per word: SparseAttention.qk_dim = "
                   f"{a.qk_dim} must be a multiple of 32")
            _check(c is not None or a.window == 0,
                   f"Pipeline without a compressor self-indexes raw token rows, so a sliding window of {a.window} "
                   f"would attend rows twice; set SparseAttention.window = 0 or add a Compressor")
            return
        if c is None:
            _check(ix.compressor is None,
                   "Pipeline has no attention compressor (ratio 1) but its indexer has one; the indexer must "
                   "select among the rows the attention reads: give both a Compressor of the same ratio, or neither")
            _check(a.window == 0,
                   f"Pipeline without a compressor selects raw token rows, so a sliding window of {a.window} would "
                   f"attend rows twice; set SparseAttention.window = 0 (as DeepSeek-V3.2) or add a Compressor")
        else:
            _check(ix.compressor is not None,
                   f"Pipeline.compressor has ratio {c.ratio} but the indexer has no compressor; give "
                   f"Indexer(compressor=Compressor(ratio={c.ratio}, dim={ix.dim}, hadamard=True, ...)), or "
                   f"indexer=None to attend every compressed row (HCA)")
            _check(ix.compressor.ratio == c.ratio,
                   f"Indexer.compressor.ratio = {ix.compressor.ratio} differs from Pipeline.compressor.ratio = "
                   f"{c.ratio}; the indexer must score exactly the rows the attention reads")

    @property
    def layer(self) -> str:
        """Which attention layer this is: 'csa', 'dsa', 'hca' or 'window' (LAYER_KINDS)."""
        if self.indexer is None:
            return "hca" if self.compressor is not None else "window"
        return "csa" if self.compressor is not None else "dsa"

    # -- derived quantities -------------------------------------------------------------
    @property
    def ratio(self) -> int:
        return self.compressor.ratio if self.compressor is not None else 1

    def num_compressed(self, seq_len: int) -> int:
        """T: the selectable rows (S // m; the trailing S mod m tokens are not compressed); 0 for a
        window-only layer, which selects nothing."""
        if self.layer == "window":
            return 0
        return seq_len // self.ratio

    def topk_eff(self, seq_len: int) -> int:
        """Selected rows per key list: min(topk, T) with an indexer, all T rows for HCA, 0 window-only."""
        T = self.num_compressed(seq_len)
        return min(self.indexer.topk, T) if self.indexer is not None else T

    def index_width(self, seq_len: int) -> int:
        """W + K: length of each query's key list."""
        return self.attention.window + self.topk_eff(seq_len)

    def selected_offset(self, seq_len: int) -> int:
        """Offset added to selected row ids in the attention's key list (S with a compressor, else 0)."""
        return seq_len if self.compressor is not None else 0

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Pipeline":
        return _from_dict(cls, d)

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **({"indent": 2} | kw))

    @classmethod
    def from_json(cls, s: str) -> "Pipeline":
        return cls.from_dict(json.loads(s))

    def replace(self, **changes) -> "Pipeline":
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return format_pipeline(self)


# ---------------------------------------------------------------------------------------
# dict round trip: nested dataclasses become {"type": name, field: value, ...}
_TYPES = {t.__name__: t for t in (YaRN, RoPE, Quant, Compressor, Indexer, SelfIndex, SparseAttention, Pipeline)}


def _to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {"type": type(obj).__name__}
        for f in dataclasses.fields(obj):
            out[f.name] = _to_dict(getattr(obj, f.name))
        return out
    return obj


def _from_dict(cls, d) -> Any:
    if not isinstance(d, dict):
        raise SpecError(f"expected a dict describing a {cls.__name__}, got {type(d).__name__}")
    d = dict(d)
    tname = d.pop("type", cls.__name__)
    if tname != cls.__name__:
        raise SpecError(f"expected type {cls.__name__!r}, got {tname!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise SpecError(f"unknown field(s) {unknown} for {cls.__name__}; valid fields: {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        if isinstance(v, dict) and "type" in v:
            sub = _TYPES.get(v["type"])
            if sub is None:
                raise SpecError(f"unknown spec type {v['type']!r}; valid: {sorted(_TYPES)}")
            v = _from_dict(sub, v)
        kwargs[k] = v
    return cls(**kwargs)


def _fmt_rope(r: Optional[RoPE]) -> str:
    if r is None:
        return "none"
    if r.yarn is None:
        return f"last {r.dim} dims, base {r.base:g}"
    y = r.yarn
    return (f"last {r.dim} dims, YaRN(base {y.base:g}, factor {y.factor:g}, orig {y.original_seq_len}, "
            f"beta {y.beta_fast:g}/{y.beta_slow:g})")


def _fmt_compressor(c: Optional[Compressor]) -> str:
    if c is None:
        return "none (ratio 1: raw rows)"
    return (f"ratio {c.ratio}{' with overlap (2m slots)' if c.overlap else ''}, dim {c.dim}, "
            f"RMSNorm eps {c.norm_eps:g}, RoPE {_fmt_rope(c.rope)}"
            f"{', Hadamard rotation' if c.hadamard else ''}")


def _fmt_indexer(p: Pipeline) -> str:
    ix = p.indexer
    if ix is None:
        return ("none: every visible compressed row is attended (HCA)" if p.compressor is not None
                else "none: the sliding window alone")
    if isinstance(ix, SelfIndex):
        return (f"1-bit self-index of the attention keys (sign codes + mean |K|, head-summed query), "
                f"top-{ix.topk}")
    return (f"{ix.heads} heads x dim {ix.dim}, top-{ix.topk}; keys: "
            + (_fmt_compressor(ix.compressor) if ix.compressor else "idx_k given (uncompressed)")
            + f"; idx_q and keys {_fmt_quant(ix.quant)}"
            + ("; scores rounded to bf16 (the official code's)" if ix.score_rounding == "bf16" else "")
            + ("; multiplied on FP8 tensor cores (FP8 accumulation)" if ix.fp8_mma else ""))


def _fmt_quant(q: Optional[Quant]) -> str:
    if q is None:
        return "bf16 (no quantisation)"
    return f"quantised {q.format.upper()} in blocks of {q.block} (power-of-two scales)"


def format_pipeline(p: Pipeline) -> str:
    a = p.attention
    lines = [
        f"Pipeline {p.name!r}  ({p.layer.upper()} layer, m = {p.ratio})",
        f"  compressor : {'none' if p.layer == 'window' else _fmt_compressor(p.compressor)}",
        f"  indexer    : {_fmt_indexer(p)}",
        f"  attention  : {a.heads} heads, qk {a.qk_dim} / v {a.v_dim}, window {a.window}, "
        f"sink {'on' if a.sink else 'off'}, scale {a.softmax_scale:.6g}"
        f"{'' if a.scale is not None else ' (qk_dim^-0.5)'}, inverse RoPE {_fmt_rope(a.inverse_rope)}",
        "  kv rows    : " + (f"first {a.kv_quant_channels} channels {_fmt_quant(a.kv_quant)}"
                             if a.kv_quant is not None else _fmt_quant(None)),
    ]
    return "\n".join(lines)
