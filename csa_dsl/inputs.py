"""Canonical input names, shapes and dtypes of a pipeline; random inputs; input checks."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from .spec import Pipeline, SpecError

Shape = Tuple[int, ...]


def input_signature(spec: Pipeline, batch: int, seq_len: int) -> Dict[str, Tuple[Shape, torch.dtype]]:
    """name -> (shape, dtype) of every input the pipeline reads (semantics doc, 'Stages')."""
    a, ix, c = spec.attention, spec.indexer, spec.compressor
    B, S = batch, seq_len
    sig: Dict[str, Tuple[Shape, torch.dtype]] = {
        "q": ((B, S, a.heads, a.qk_dim), torch.bfloat16),
        "kv": ((B, S, a.qk_dim), torch.bfloat16),
    }
    if c is not None:
        cd = c.coff * c.dim
        sig.update({
            "cmp_kv": ((B, S, cd), torch.float32),
            "cmp_gate": ((B, S, cd), torch.float32),
            "cmp_ape": ((c.ratio, cd), torch.float32),
            "cmp_norm": ((c.dim,), torch.float32),
        })
    sig["idx_q"] = ((B, S, ix.heads, ix.dim), torch.bfloat16)
    sig["idx_w"] = ((B, S, ix.heads), torch.float32)
    if ix.compressor is not None:
        ic = ix.compressor
        cd = ic.coff * ic.dim
        sig.update({
            "idx_kv": ((B, S, cd), torch.float32),
            "idx_gate": ((B, S, cd), torch.float32),
            "idx_ape": ((ic.ratio, cd), torch.float32),
            "idx_norm": ((ic.dim,), torch.float32),
        })
    else:
        sig["idx_k"] = ((B, S, ix.dim), torch.bfloat16)
    if a.sink:
        sig["sink"] = ((a.heads,), torch.float32)
    return sig


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

    q, kv, idx_q, idx_k: unit-RMS rows (the model RMS-normalises them); compressor
    values/gates: unit normal projections; ape: small learned biases; norm weights
    near 1; idx_w: normal times DI^-0.5 * HI^-0.5 (the model's pre-scaling; signed);
    sink: logits around 1 so that it matters for queries with few keys.
    """
    if batch < 1 or seq_len < 1:
        raise SpecError(f"random_inputs needs batch >= 1 and seq_len >= 1, got batch={batch}, seq_len={seq_len}")
    dev = torch.device(device)
    # generated on the target device: a CPU generator would take minutes for the
    # 8.6e9-element q of S = 262,144 (values then differ between CPU and GPU runs)
    g = torch.Generator(device=dev).manual_seed(seed)
    sig = input_signature(spec, batch, seq_len)
    out = {}

    for name, (shape, dtype) in sig.items():
        std, mean = 1.0, 0.0
        if name in ("cmp_ape", "idx_ape"):
            std = 0.5
        elif name in ("cmp_norm", "idx_norm"):
            std, mean = 0.1, 1.0
        elif name == "idx_w":
            std = spec.indexer.dim ** -0.5 * spec.indexer.heads ** -0.5
        elif name == "sink":
            mean = 1.0
        out[name] = _filled(shape, dtype, dev, g, std, mean)
    return out


def _filled(shape, dtype, device, gen, std, mean) -> torch.Tensor:
    """normal(mean, std) in `dtype` on `device`, generated slab by slab (bounded host memory)."""
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
        raise SpecError(f"missing input(s) {missing} for pipeline {spec.name!r}; it reads {sorted(sig_names)} "
                        f"(csa_dsl.random_inputs(spec, B, S, device) makes a complete set)")
    if extra:
        raise SpecError(f"unexpected input(s) {extra} for pipeline {spec.name!r}; it reads {sorted(sig_names)}")
    q = inputs["q"]
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        raise SpecError(f"q must be a 4-D tensor [B, S, H, D], got "
                        f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}")
    B, S = int(q.shape[0]), int(q.shape[1])
    if B < 1 or S < 1:
        raise SpecError(f"q has an empty batch or sequence: shape {tuple(q.shape)}")
    sig = input_signature(spec, B, S)
    dev = torch.device(device) if device is not None else q.device
    for name, (shape, dtype) in sig.items():
        t = inputs[name]
        if not isinstance(t, torch.Tensor):
            raise SpecError(f"input {name!r} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise SpecError(f"input {name!r} has shape {tuple(t.shape)}, expected {shape} for pipeline "
                            f"{spec.name!r} at B={B}, S={S} (semantics doc: 'Stages and canonical tensor names')")
        if t.dtype != dtype:
            raise SpecError(f"input {name!r} has dtype {t.dtype}, expected {dtype}; convert with .to({dtype})")
        if t.device.type != dev.type or (dev.index is not None and t.device.index not in (None, dev.index)):
            raise SpecError(f"input {name!r} is on {t.device}, expected {dev}; move it with .to('{dev}')")
        if not t.is_contiguous():
            raise SpecError(f"input {name!r} is not contiguous; call .contiguous() on it")
    return B, S
