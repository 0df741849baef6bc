"""A pipeline's inputs: names, shapes and dtypes (from the stage registry), random inputs, and the
checks made before any launch (layout always; finite values when the schedule asks)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from .lang.errors import InputError
from .lang.spec import Pipeline
from .stages import stages_of

Shape = Tuple[int, ...]
_SLAB = 1 << 26          # elements per step of the finite-value scan (bounded extra memory)


def input_signature(spec: Pipeline, batch: int, seq_len: int) -> Dict[str, Tuple[Shape, torch.dtype]]:
    """name -> (shape, dtype) of every input the pipeline reads (docs/semantics.md, 'Stages')."""
    sig = {}
    for role, kind, stage in stages_of(spec):
        for name, d in kind.inputs(spec, stage, role).items():
            sig[name] = (tuple(d.shape(batch, seq_len)), d.dtype)
    return sig


def token_inputs(spec: Pipeline) -> Tuple[str, ...]:
    """The inputs with a sequence axis (axis 1), which context parallelism shards."""
    return tuple(name for role, kind, stage in stages_of(spec)
                 for name, d in kind.inputs(spec, stage, role).items() if d.per_token)


def output_signature(spec: Pipeline, batch: int, seq_len: int, return_indices: bool = False,
                     longest: Optional[int] = None) -> Dict[str, Tuple[Shape, torch.dtype]]:
    """name -> (shape, dtype) of what a forward returns: out [B,S,H,Dv] bf16 and, with return_indices, the
    key lists [B,S,W+K] int32. `longest` (a packed batch, B = 1): its longest sequence sizes K, and the
    shapes lose the batch axis ([N,H,Dv], [N,W+K])."""
    a = spec.attention
    lead = (seq_len,) if longest is not None else (batch, seq_len)
    sig = {"out": (lead + (a.heads, a.v_dim), torch.bfloat16)}
    if return_indices:
        sig["indices"] = (lead + (spec.index_width(longest or seq_len),), torch.int32)
    return sig


def signature_bytes(sig: Dict[str, Tuple[Shape, torch.dtype]]) -> int:
    """Bytes of the tensors a signature describes."""
    return sum(_numel(shape) * torch.empty(0, dtype=dt).element_size() for shape, dt in sig.values())


def input_bytes(spec: Pipeline, batch: int, seq_len: int) -> int:
    return signature_bytes(input_signature(spec, batch, seq_len))


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def random_inputs(spec: Pipeline, batch: int, seq_len: int, device="cpu", seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random inputs at realistic scales (never zeros).

    q, kv, idx_q, idx_k: unit-RMS rows (the model RMS-normalises them); compressor values and
    gates: unit normal projections; ape: small learned biases; norm weights near 1; idx_w:
    normal times DI^-0.5 * HI^-0.5 (the model's pre-scaling; signed); sink: logits around 1 so
    that it matters for queries with few keys."""
    if batch < 1 or seq_len < 1:
        raise InputError(f"random_inputs needs batch >= 1 and seq_len >= 1, got batch={batch}, seq_len={seq_len}")
    dev = torch.device(device)
    # generated on the target device: a CPU generator would take minutes for the
    # 8.6e9-element q of S = 262,144 (values then differ between CPU and GPU runs)
    g = torch.Generator(device=dev).manual_seed(seed)
    out = {}
    for name, (shape, dtype) in input_signature(spec, batch, seq_len).items():
        std, mean = 1.0, 0.0
        if name.endswith("_ape"):
            std = 0.5
        elif name.endswith("_norm"):
            std, mean = 0.1, 1.0
        elif name == "idx_w":
            std = spec.indexer.dim ** -0.5 * spec.indexer.heads ** -0.5
        elif name == "sink":
            mean = 1.0
        out[name] = _filled(shape, dtype, dev, g, std, mean)
    return out


def random_packed_inputs(spec: Pipeline, lengths, device="cpu", seed: int = 0):
    """(cu_seqlens, inputs) of a packed batch of sequences of `lengths` tokens (random_inputs' values)."""
    lengths = [int(x) for x in lengths]
    if not lengths or min(lengths) < 0 or sum(lengths) < 1:
        raise InputError(f"lengths must be >= 0 with at least one token in all, got {lengths}")
    cu = torch.tensor([0] + lengths, dtype=torch.int64).cumsum(0).to(device=device, dtype=torch.int32)
    return cu, pack(spec, random_inputs(spec, 1, sum(lengths), device, seed))


def _filled(shape, dtype, device, gen, std, mean) -> torch.Tensor:
    """normal(mean, std) in `dtype` on `device`, generated slab by slab (bounded extra memory)."""
    t = torch.empty(shape, dtype=dtype, device=device)
    flat = t.view(-1)
    n = flat.numel()
    slab = 1 << 24
    for i in range(0, n, slab):
        j = min(n, i + slab)
        x = torch.randn(j - i, generator=gen, dtype=torch.float32, device=device)
        x.mul_(std).add_(mean)
        x[x == 0] = std  # never an exact zero
        flat[i:j].copy_(x.to(dtype), non_blocking=False)
    return t


def packed_signature(spec: Pipeline, tokens: int) -> Dict[str, Tuple[Shape, torch.dtype]]:
    """input_signature of a packed batch of `tokens` tokens: per-token inputs without the batch axis
    ([N, ...]), per-layer parameters unchanged (docs/semantics.md section 8)."""
    per_token = set(token_inputs(spec))
    return {name: (shape[1:] if name in per_token else shape, dt)
            for name, (shape, dt) in input_signature(spec, 1, tokens).items()}


def pack(spec: Pipeline, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """B = 1 inputs [1, N, ...] -> the packed inputs of the same tokens ([N, ...]; views)."""
    per_token = set(token_inputs(spec))
    return {n: t[0] if n in per_token else t for n, t in inputs.items()}


def unpack(spec: Pipeline, inputs: Dict[str, torch.Tensor], start: int = 0,
           stop: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Packed inputs -> the B = 1 inputs of tokens [start, stop) (views): one sequence's own run."""
    per_token = set(token_inputs(spec))
    return {n: t[start:stop][None] if n in per_token else t for n, t in inputs.items()}


def _check_names(spec: Pipeline, inputs: Dict[str, torch.Tensor], how: str) -> None:
    sig_names = set(input_signature(spec, 1, 1))
    missing = sorted(sig_names - set(inputs))
    extra = sorted(set(inputs) - sig_names)
    if missing:
        raise InputError(f"missing input(s) {missing} for pipeline {spec.name!r}; it reads {sorted(sig_names)} "
                         f"({how} makes a complete set)")
    if extra:
        raise InputError(f"unexpected input(s) {extra} for pipeline {spec.name!r}; it reads {sorted(sig_names)}")


def validate_inputs(spec: Pipeline, inputs: Dict[str, torch.Tensor], device=None) -> Tuple[int, int]:
    """Check names, shapes, dtypes, devices and contiguity; return (batch, seq_len). Raises before any launch."""
    _check_names(spec, inputs, "csa_dsl.random_inputs(spec, B, S, device)")
    q = inputs["q"]
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        raise InputError(f"q must be a 4-D tensor [B, S, H, D], got "
                         f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}"
                         + ("; packed [N, H, D] inputs go to fwd.varlen(cu_seqlens, ...)"
                            if isinstance(q, torch.Tensor) and q.dim() == 3 else ""))
    B, S = int(q.shape[0]), int(q.shape[1])
    if B < 1 or S < 1:
        raise InputError(f"q has an empty batch or sequence: shape {tuple(q.shape)}")
    _check_tensors(spec, inputs, input_signature(spec, B, S), device or q.device, f"B={B}, S={S}")
    return B, S


def validate_varlen(spec: Pipeline, cu_seqlens: torch.Tensor, inputs: Dict[str, torch.Tensor], device=None,
                    max_seqlen: Optional[int] = None, check_values: bool = True) -> Tuple[int, int, int]:
    """Check a packed batch before any launch; return (tokens N, sequences n, max_seqlen).

    Layout always (names, [N, ...] shapes, dtypes, devices, contiguity; cu_seqlens int32 [n + 1] on the
    inputs' device). The values of cu_seqlens (cu[0] = 0, non-decreasing, cu[n] = N, no sequence longer
    than max_seqlen) are read on the host, one sync, when `check_values` or when max_seqlen is None (it is
    then their longest sequence); with max_seqlen given and check_values False nothing is read back (the
    CUDA-graph way: the caller vouches for the values)."""
    _check_names(spec, inputs, "csa_dsl.random_packed_inputs(spec, lengths, device)")
    q = inputs["q"]
    if not isinstance(q, torch.Tensor) or q.dim() != 3:
        raise InputError(f"packed q must be a 3-D tensor [N, H, D] (the sequences' tokens end to end), got "
                         f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}")
    N = int(q.shape[0])
    if N < 1:
        raise InputError("a packed batch needs at least one token (q is [0, H, D])")
    dev = torch.device(device) if device is not None else q.device
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1:
        raise InputError("cu_seqlens must be an int32 tensor [n + 1] (0, len_0, len_0 + len_1, ..., N), got "
                         + (f"{cu_seqlens.dtype} {tuple(cu_seqlens.shape)}" if isinstance(cu_seqlens, torch.Tensor)
                            else type(cu_seqlens).__name__))
    if cu_seqlens.numel() < 2:
        raise InputError(f"cu_seqlens needs n + 1 >= 2 entries (at least one sequence), got {cu_seqlens.numel()}")
    if cu_seqlens.device.type != dev.type:
        raise InputError(f"cu_seqlens is on {cu_seqlens.device}; the inputs are on {dev}: move it with .to('{dev}')")
    if max_seqlen is not None and (isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int)
                                   or not 1 <= max_seqlen <= N):
        raise InputError(f"max_seqlen must be an int in [1, N = {N:,}] (the longest sequence), got {max_seqlen!r}")
    _check_tensors(spec, inputs, packed_signature(spec, N), dev, f"N={N} packed tokens")
    n = cu_seqlens.numel() - 1
    if check_values or max_seqlen is None:
        cu = cu_seqlens.tolist()
        lens = [b - a for a, b in zip(cu, cu[1:])]
        if cu[0] != 0 or min(lens) < 0 or cu[-1] != N:
            bad = next((i for i, x in enumerate(lens) if x < 0), None)
            raise InputError(f"cu_seqlens must start at 0, never decrease and end at N = {N:,} (q's tokens); got "
                             f"cu[0] = {cu[0]}, cu[-1] = {cu[-1]}"
                             + (f", cu[{bad}] = {cu[bad]} > cu[{bad + 1}] = {cu[bad + 1]}" if bad is not None else ""))
        longest = max(lens)
        if max_seqlen is not None and longest > max_seqlen:
            raise InputError(f"sequence {lens.index(longest)} has {longest:,} tokens > max_seqlen = {max_seqlen:,}")
        max_seqlen = max_seqlen or longest
    return N, n, max_seqlen


def _check_tensors(spec: Pipeline, inputs: Dict[str, torch.Tensor], sig, device, at: str) -> None:
    dev = torch.device(device)
    for name, (shape, dtype) in sig.items():
        t = inputs[name]
        if not isinstance(t, torch.Tensor):
            raise InputError(f"input {name!r} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise InputError(f"input {name!r} has shape {tuple(t.shape)}, expected {shape} for pipeline "
                             f"{spec.name!r} at {at} (docs/semantics.md: 'Stages and canonical tensor names')")
        if t.dtype != dtype:
            raise InputError(f"input {name!r} has dtype {t.dtype}, expected {dtype}; convert with .to({dtype})")
        if t.device.type != dev.type or (dev.index is not None and t.device.index not in (None, dev.index)):
            raise InputError(f"input {name!r} is on {t.device}, expected {dev}; move it with .to('{dev}')")
        if not t.is_contiguous():
            raise InputError(f"input {name!r} is not contiguous; call .contiguous() on it")


def check_finite(inputs: Dict[str, torch.Tensor]) -> None:
    """Raise InputError naming the first floating input with a NaN or Inf, its first bad position and
    how many there are. One fused read of each input (max |x|, which is finite exactly when every
    element is) and one host sync for all of them; the slab-wise search runs only for a bad tensor."""
    names = [n for n, t in inputs.items() if t.is_floating_point() and t.numel()]
    if not names:
        return
    peaks = torch.stack([torch.linalg.vector_norm(inputs[n].reshape(-1), float("inf")).float() for n in names])
    bad = (~torch.isfinite(peaks)).tolist()
    if not any(bad):
        return
    name = names[bad.index(True)]
    t = inputs[name]
    flat = t.reshape(-1)
    for i in range(0, flat.numel(), _SLAB):
        hit = ~torch.isfinite(flat[i:i + _SLAB])
        if bool(hit.any()):
            first = i + int(hit.nonzero()[0, 0])
            pos = [int(p) for p in torch.unravel_index(torch.tensor(first), tuple(t.shape))]
            count = sum(int((~torch.isfinite(flat[j:j + _SLAB])).sum()) for j in range(i, flat.numel(), _SLAB))
            raise InputError(
                f"input {name!r} has {count:,} non-finite value(s); the first is {float(flat[first])} at {pos}. "
                f"Fix what produced it, or run with Schedule(check_inputs=False) (`--no-check-inputs`) to let it "
                f"propagate as docs/semantics.md section 9 says")
