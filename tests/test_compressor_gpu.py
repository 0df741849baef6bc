"""Triton compressor / RoPE kernels on a CUDA GPU at preset sizes (skipped without CUDA).

Run on the GPU machine (TRITON_INTERPRET unset):
    python -m pytest -q -m gpu tests/test_compressor_gpu.py

Fresh random inputs every run (the seed is printed in failure messages); the kernel
writes into a NaN-poisoned `out`. Bound: as in test_compressor_triton.py,
|kernel - ref| <= ulp_bf16(|ref|) + ulp_bf16(max |ref row|) per element and <= 1% of
elements differing, against the reference computed on the same GPU.
"""
import time

import pytest
import torch

from kernels_triton._env import kernels_interpreted
from kernels_triton.compressor import naive as cn
from kernels_triton.rope import naive as rn
from kernels_triton.rope.tables import cos_sin
from pipeline.lang.presets import preset
from pipeline.metrics import bf16_rounding_check
from pipeline.stages.compressor import params, rotary

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def kw(c, positions=262144) -> dict:
    """The kernel's parameters of a Compressor spec, with RoPE tables of positions 0..positions-1."""
    cos, sin = (t.contiguous() for t in cos_sin(rotary(c.rope), torch.arange(positions, device="cuda")))
    return dict(params(c), cos=cos, sin=sin)


@pytest.fixture(scope="module")
def kern():
    from kernels_triton.compressor import kernel as comp
    from kernels_triton.rope import kernel as rp
    if kernels_interpreted(comp._compress_kernel) or kernels_interpreted(rp._rope_kernel):
        pytest.skip("kernels_triton was imported with TRITON_INTERPRET=1; run the GPU tests without it")
    assert not torch.backends.cuda.matmul.allow_tf32, "TF32 matmul would make the reference Hadamard inexact"
    return comp, rp


def _presets():
    p = preset("v4-flash")
    return {"attention": p.compressor, "indexer": p.indexer.compressor}


def check_close(k, r, what, max_frac=0.01):
    err, bound, frac = bf16_rounding_check(k, r)
    nbad = int((err > bound).sum())
    assert nbad == 0, f"{what}: {nbad} elements beyond the bound, worst err {err.max().item():.3g}"
    assert frac <= max_frac, f"{what}: {frac:.3%} of elements differ (> {max_frac:.0%})"
    return frac


def fresh_inputs(B, S, c, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    cd = c.coff * c.dim
    values = torch.randn(B, S, cd, device="cuda", generator=g)
    gate = torch.randn(B, S, cd, device="cuda", generator=g)
    ape = 0.5 * torch.randn(c.ratio, cd, device="cuda", generator=g)
    norm = 1 + 0.1 * torch.randn(c.dim, device="cuda", generator=g)
    return values, gate, ape, norm


def reference_rows(values, gate, ape, norm, c, r0, r1):
    """naive.compress restricted to rows [r0, r1), from its own stage functions."""
    y = cn.pool(values, gate, ape, c.ratio, c.overlap, r0, r1).to(torch.bfloat16)
    y = cn.rms_norm_bf16(y, norm, c.norm_eps)
    if c.rope is not None:
        y = rn.rope_rows_bf16(y, rotary(c.rope), torch.arange(r0, r1, device=values.device) * c.ratio)
    if c.hadamard:
        y = (y.float() @ cn.hadamard_matrix(c.dim, values.device)).to(torch.bfloat16)
    return y


@pytest.mark.parametrize("which", ["attention", "indexer"])
@pytest.mark.parametrize("B", [1, 2])
def test_preset_compressor_s16k(kern, which, B):
    comp, _ = kern
    c = _presets()[which]
    S = 16384
    seed = time.time_ns() % (2 ** 31)
    inp = fresh_inputs(B, S, c, seed)
    out = torch.full((B, S // c.ratio, c.dim), float("nan"), dtype=torch.bfloat16, device="cuda")
    comp.compress(*inp, **kw(c), out=out)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), f"seed {seed}: NaN left in out"
    check_close(out, cn.compress(*inp, **kw(c)), f"{which} B={B} seed {seed}")


@pytest.mark.parametrize("which", ["attention", "indexer"])
def test_preset_compressor_s256k_sampled(kern, which):
    """S = 262,144 (2 x 1 GiB fp32 inputs for the attention compressor): whole run, no NaN;
    sampled row ranges vs the reference and vs slice launches (row_start > 0)."""
    comp, _ = kern
    c = _presets()[which]
    B, S = 1, 262144
    T = S // c.ratio
    seed = time.time_ns() % (2 ** 31)
    inp = fresh_inputs(B, S, c, seed)
    out = torch.full((B, T, c.dim), float("nan"), dtype=torch.bfloat16, device="cuda")
    comp.compress(*inp, **kw(c), out=out)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), f"seed {seed}: NaN left in out"
    for r0, r1 in ((0, 256), (T // 2 - 77, T // 2 + 179), (T - 256, T)):
        check_close(out[:, r0:r1], reference_rows(*inp, c, r0, r1), f"{which} rows {r0}:{r1} seed {seed}")
        sl = torch.full((B, r1 - r0, c.dim), float("nan"), dtype=torch.bfloat16, device="cuda")
        comp.compress(*inp, **kw(c), row_start=r0, row_end=r1, out=sl)
        assert torch.equal(sl.view(torch.int16), out[:, r0:r1].view(torch.int16)), f"slice {r0}:{r1} differs"
    del inp, out
    torch.cuda.empty_cache()


def test_online_softmax_path_gpu(kern):
    """slot_chunk < ratio (the path of large m*D) on the GPU."""
    comp, _ = kern
    c = _presets()["attention"]
    seed = time.time_ns() % (2 ** 31)
    inp = fresh_inputs(1, 4096, c, seed)
    check_close(comp.compress(*inp, **kw(c), config={"slot_chunk": 1}), cn.compress(*inp, **kw(c)),
                f"slot_chunk=1 seed {seed}")


def test_inverse_rope_gpu(kern):
    _, rp = kern
    a = preset("v4-flash").attention
    rot = rotary(a.inverse_rope)
    N = 2048
    seed = time.time_ns() % (2 ** 31)
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(N, a.heads, a.v_dim, device="cuda", generator=g).to(torch.bfloat16)
    pos = torch.arange(200000, 200000 + N, device="cuda")
    for inverse in (True, False):
        r = rn.rope_rows_bf16(x, rot, pos, inverse=inverse, heads=True)
        y = x.clone()
        rp.apply_rope_(y, *(t.contiguous() for t in cos_sin(rot, pos)), 0, inverse=inverse)
        assert torch.equal(y.view(torch.int16), r.view(torch.int16)), f"inverse={inverse} seed {seed}"
