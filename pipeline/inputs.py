"""A pipeline's inputs: names, shapes and dtypes (from the stage registry), random inputs, and the
checks made before any launch (layout always; finite values when the schedule asks)."""
from __future__ import annotations

from typing import Dict, Tuple

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


def input_bytes(spec: Pipeline, batch: int, seq_len: int) -> int:
    return sum(_numel(shape) * torch.empty(0, dtype=dt).element_size()
               for shape, dt in input_signature(spec, batch, seq_len).values())


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


def validate_inputs(spec: Pipeline, inputs: Dict[str, torch.Tensor], device=None) -> Tuple[int, int]:
    """Check names, shapes, dtypes, devices and contiguity; return (batch, seq_len). Raises before any launch."""
    sig_names = set(input_signature(spec, 1, 1))
    missing = sorted(sig_names - set(inputs))
    extra = sorted(set(inputs) - sig_names)
    if missing:
        raise InputError(f"missing input(s) {missing} for pipeline {spec.name!r}; it reads {sorted(sig_names)} "
                         f"(csa_dsl.random_inputs(spec, B, S, device) makes a complete set)")
    if extra:
        raise InputError(f"unexpected input(s) {extra} for pipeline {spec.name!r}; it reads {sorted(sig_names)}")
    q = inputs["q"]
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        raise InputError(f"q must be a 4-D tensor [B, S, H, D], got "
                         f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}")
    B, S = int(q.shape[0]), int(q.shape[1])
    if B < 1 or S < 1:
        raise InputError(f"q has an empty batch or sequence: shape {tuple(q.shape)}")
    dev = torch.device(device) if device is not None else q.device
    for name, (shape, dtype) in input_signature(spec, B, S).items():
        t = inputs[name]
        if not isinstance(t, torch.Tensor):
            raise InputError(f"input {name!r} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise InputError(f"input {name!r} has shape {tuple(t.shape)}, expected {shape} for pipeline "
                             f"{spec.name!r} at B={B}, S={S} (docs/semantics.md: 'Stages and canonical tensor names')")
        if t.dtype != dtype:
            raise InputError(f"input {name!r} has dtype {t.dtype}, expected {dtype}; convert with .to({dtype})")
        if t.device.type != dev.type or (dev.index is not None and t.device.index not in (None, dev.index)):
            raise InputError(f"input {name!r} is on {t.device}, expected {dev}; move it with .to('{dev}')")
        if not t.is_contiguous():
            raise InputError(f"input {name!r} is not contiguous; call .contiguous() on it")
    return B, S


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
