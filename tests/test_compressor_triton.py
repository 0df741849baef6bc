"""Triton compressor and RoPE kernels vs the exact PyTorch reference, on a CPU (Triton interpreter).

Exactness bound asserted (and why):
  The kernel does the reference's fp32 ops in the same order with the same bf16 rounding
  points (round to nearest even), but fp32 reductions (slot sum, softmax denominator,
  RMSNorm sum of squares, Hadamard) are summed in another order and exp is another
  implementation, so fp32 intermediates differ by a few fp32 ulps. After a bf16 cast that
  is invisible except where a value sits next to a bf16 rounding boundary: then one bf16
  rounding flips by 1 ulp. The pooled value is a signed sum and RoPE / Hadamard mix
  channels, so a flip is 1 ulp *at the scale of the row*, not of the (possibly tiny)
  element. Asserted for every element:
        |kernel - ref| <= ulp_bf16(|ref|) + ulp_bf16(max |ref row|)
  and at most 1% of elements differ at all (measured: 0 - 0.3%).
  Stage by stage it is tighter: the RoPE stage is bitwise exact (same fp32 ops, tables and
  rounding: kernel(rope) == rope_rows_bf16(kernel(no rope))), and the in-place RoPE kernel
  is bitwise equal to kernels_triton.rope.naive.rope_rows_bf16.
"""
import dataclasses
import os
import re

import pytest
import torch

# tests/conftest.py does the same: without a GPU the kernels must be defined interpreted,
# i.e. TRITON_INTERPRET=1 before anything imports triton kernels
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

from kernels_triton.compressor import ir as comp_ir  # noqa: E402
from kernels_triton.compressor import kernel as comp  # noqa: E402
from kernels_triton.compressor import naive as cn  # noqa: E402
from kernels_triton.compressor.naive import hadamard_matrix  # noqa: E402
from kernels_triton.rope import ir as rope_ir  # noqa: E402
from kernels_triton.rope import kernel as rp  # noqa: E402
from kernels_triton.rope import naive as rn  # noqa: E402
from kernels_triton.rope import tables as rope_tables  # noqa: E402
from pipeline.lang.spec import Compressor, RoPE, YaRN  # noqa: E402
from pipeline.metrics import bf16_rounding_check, ulp_bf16  # noqa: E402
from kernels_triton.rope.tables import cos_sin  # noqa: E402
from pipeline.stages.compressor import params, rotary  # noqa: E402

# CPU tensors through interpreted kernels; skipped (conftest) where the kernels are compiled
interpret = pytest.mark.interpret


# ---------------------------------------------------------------------------------------
# helpers
def assert_bf16_close(k: torch.Tensor, r: torch.Tensor, max_frac: float = 0.01, what: str = ""):
    assert k.shape == r.shape and k.dtype == r.dtype == torch.bfloat16, (k.shape, r.shape, k.dtype)
    if r.numel() == 0:
        return
    assert not torch.isnan(k).any(), f"{what}: NaN in the kernel output"
    err, bound, differ = bf16_rounding_check(k, r)
    bad = err > bound
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements beyond 1 ulp(elem) + 1 ulp(row max); worst "
                           f"err {err.max().item():.3g} at {bad.nonzero()[0].tolist()}")
    assert differ <= max_frac, f"{what}: {differ:.2%} of elements differ from the reference (> {max_frac:.0%})"


def make_spec(D, m, overlap, rope_dim, hadamard, yarn=True):
    rope = RoPE(dim=rope_dim, yarn=YaRN() if yarn else None) if rope_dim else None
    return Compressor(ratio=m, dim=D, overlap=overlap, rope=rope, hadamard=hadamard)


def kw(c: Compressor, positions: int = 4096) -> dict:
    """The kernel's plain parameters of a Compressor spec and RoPE tables of positions 0..positions-1
    (what the composer passes)."""
    cos, sin = cos_sin(rotary(c.rope), torch.arange(positions)) if c.rope is not None else (None, None)
    return dict(params(c), cos=cos, sin=sin)


def tables(rope, positions):
    return [t.contiguous() for t in cos_sin(rotary(rope) if not hasattr(rope, "_fields") else rope, positions)]


def make_inputs(B, S, c: Compressor, seed=0):
    g = torch.Generator().manual_seed(seed)
    cd = c.coff * c.dim
    values = torch.randn(B, S, cd, generator=g)
    gate = torch.randn(B, S, cd, generator=g)
    ape = torch.randn(c.ratio, cd, generator=g) * 0.5
    norm = 1 + 0.1 * torch.randn(c.dim, generator=g)
    return values, gate, ape, norm


# (B, S, D, m, overlap, rope_dim, hadamard): B {1,2}, S {1 (T=0), 7, 64, 130}, D {32, 64}
# (+128 with hadamard, +48 not a power of two, +m=128 whose slots need two online-softmax chunks)
CASES = [
    (1, 1, 32, 2, True, 32, False),      # T = 0
    (2, 1, 64, 4, False, 0, True),       # T = 0
    (1, 7, 32, 8, True, 16, False),      # T = 0 (S < m)
    (1, 7, 32, 1, False, 0, False),
    (2, 7, 32, 4, True, 16, False),      # T = 1, 3 trailing tokens
    (2, 7, 64, 2, True, 64, True),
    (1, 64, 32, 1, True, 32, True),
    (2, 64, 64, 2, False, 64, False),
    (1, 64, 64, 4, True, 64, False),     # v4 attention compressor, small
    (2, 64, 32, 8, False, 0, True),
    (1, 130, 64, 4, False, 32, True),
    (2, 130, 32, 2, True, 0, False),
    (2, 130, 64, 8, True, 64, True),
    (1, 130, 32, 1, True, 32, False),
    (1, 130, 64, 1, False, 64, True),
    (1, 64, 128, 4, True, 64, True),     # v4 indexer compressor, small
    (1, 64, 48, 4, True, 16, False),     # D not a power of two (masked channels)
    (1, 300, 32, 128, True, 32, False),  # m = 128: 256 slots in 2 chunks of the online softmax
]


@interpret
@pytest.mark.parametrize("B,S,D,m,overlap,rope_dim,hadamard", CASES)
def test_compress_matches_reference(B, S, D, m, overlap, rope_dim, hadamard):
    c = make_spec(D, m, overlap, rope_dim, hadamard)
    inp = make_inputs(B, S, c, seed=B * 1000 + S + D + m)
    out = comp.compress(*inp, **kw(c))
    assert out.shape == (B, S // m, D) and out.dtype == torch.bfloat16
    assert_bf16_close(out, cn.compress(*inp, **kw(c)), what=str(c))


@interpret
def test_compress_yarn_off_and_odd_rope():
    c = Compressor(ratio=2, dim=32, overlap=True, rope=RoPE(dim=6, yarn=None, base=10000.0))
    inp = make_inputs(2, 40, c, seed=7)
    assert_bf16_close(comp.compress(*inp, **kw(c)), cn.compress(*inp, **kw(c)), what=str(c))


@interpret
def test_online_softmax_chunks():
    """slot_chunk < ratio: the online softmax over several chunks matches the reference too."""
    c = make_spec(32, 8, True, 32, False)
    inp = make_inputs(1, 128, c, seed=3)
    r = cn.compress(*inp, **kw(c))
    for mc in (1, 2, 4):
        assert_bf16_close(comp.compress(*inp, **kw(c), config={"slot_chunk": mc}), r, what=f"slot_chunk={mc}")


@interpret
def test_stages_exactness():
    """Stage by stage: pool+norm within the bound, RoPE stage bitwise, Hadamard within rounding."""
    c = make_spec(128, 4, True, 64, True)
    inp = make_inputs(2, 256, c, seed=11)
    T = 256 // c.ratio
    c_norm = dataclasses.replace(c, rope=None, hadamard=False)
    c_rope = dataclasses.replace(c, hadamard=False)
    k_norm = comp.compress(*inp, **kw(c_norm))
    assert_bf16_close(k_norm, cn.compress(*inp, **kw(c_norm)), what="pool+norm")
    k_rope = comp.compress(*inp, **kw(c_rope))
    pos = torch.arange(T) * c.ratio
    assert torch.equal(k_rope.view(torch.int16), rn.rope_rows_bf16(k_norm, rotary(c.rope), pos).view(torch.int16))
    k_had = comp.compress(*inp, **kw(c))
    r_had = (k_rope.float() @ hadamard_matrix(c.dim)).to(torch.bfloat16)
    rowmax = r_had.float().abs().amax(-1, keepdim=True)
    err = (k_had.float() - r_had.float()).abs()
    assert (err <= torch.maximum(ulp_bf16(r_had), rowmax * 2.0 ** -16)).all()
    assert (k_had != r_had).float().mean().item() <= 0.01


@interpret
@pytest.mark.parametrize("overlap", [True, False])
def test_slice_into_buffer(overlap):
    """row_start > 0 (reads the previous block itself), out = a view of a NaN-poisoned buffer."""
    c = make_spec(64, 4, overlap, 64, False)
    B, S = 2, 130
    T = S // c.ratio
    inp = make_inputs(B, S, c, seed=5)
    full = comp.compress(*inp, **kw(c))
    assert_bf16_close(full, cn.compress(*inp, **kw(c)), what="full")
    buf = torch.full((B, S + T, c.dim), float("nan"), dtype=torch.bfloat16)   # [kv || compressed] layout
    for r0, r1 in ((5, 13), (0, 1), (T - 3, T), (9, 9)):
        view = buf[:, S + r0: S + r1]
        res = comp.compress(*inp, **kw(c), row_start=r0, row_end=r1, out=view)
        assert res.data_ptr() == view.data_ptr() and res.shape == (B, r1 - r0, c.dim)
        assert torch.equal(res.view(torch.int16), full[:, r0:r1].view(torch.int16))
    assert torch.isnan(buf[:, :S]).all(), "rows outside the slices were written"
    assert torch.isnan(buf[:, S + 13: S + T - 3]).all()
    # a slice without out: rows r0..r1 only
    assert torch.equal(comp.compress(*inp, **kw(c), row_start=20, row_end=T), full[:, 20:])


# ---------------------------------------------------------------------------------------
# RoPE kernel


@interpret
@pytest.mark.parametrize("inverse", [True, False])
@pytest.mark.parametrize("N,H,Dv,rd,yarn", [(37, 4, 128, 64, True), (16, 3, 96, 32, False), (9, 1, 48, 6, True)])
def test_rope_matches_reference(inverse, N, H, Dv, rd, yarn):
    rope = RoPE(dim=rd, yarn=YaRN() if yarn else None)
    g = torch.Generator().manual_seed(N + H + Dv)
    x = torch.randn(N, H, Dv, generator=g).to(torch.bfloat16)
    pos = torch.randint(0, 262144, (N,), generator=g)
    r = rn.rope_rows_bf16(x, rotary(rope), pos, inverse=inverse, heads=True)
    y = x.clone()
    assert rp.apply_rope_(y, *tables(rope, pos), 0, inverse=inverse) is y
    assert torch.equal(y.view(torch.int16), r.view(torch.int16))


@interpret
def test_rope_pos0_batched_and_strided():
    rope = rotary(RoPE(dim=64))
    g = torch.Generator().manual_seed(1)
    # pos0 form, like finish_output for a chunk of queries s0..s0+N
    x = torch.randn(2, 24, 4, 128, generator=g).to(torch.bfloat16)
    pos = torch.arange(1000, 1024)
    r = rn.rope_rows_bf16(x, rope, pos, inverse=True, heads=True)
    y = x.clone()
    rp.apply_rope_(y, *tables(rope, torch.arange(1024)), 1000)
    assert torch.equal(y.view(torch.int16), r.view(torch.int16))
    # a view with a padded head stride: only its last 64 channels change
    base = torch.randn(10, 3, 160, generator=g).to(torch.bfloat16)
    view = base[:, :, 16:144]
    expect = base.clone()
    expect[:, :, 16:144] = rn.rope_rows_bf16(view, rope, torch.arange(10), inverse=True, heads=True)
    rp.apply_rope_(view, *tables(rope, torch.arange(10)), 0)
    assert torch.equal(base.view(torch.int16), expect.view(torch.int16))


# ---------------------------------------------------------------------------------------
# validation: errors before any launch, with a fix in the message


@interpret
def test_compress_validation():
    c = make_spec(32, 4, True, 32, False)
    v, g, a, n = make_inputs(1, 16, c)
    with pytest.raises(TypeError, match=r"float32.*\.float\(\)"):
        comp.compress(v.bfloat16(), g, a, n, **kw(c))
    with pytest.raises(ValueError, match="c\\*D"):
        comp.compress(v[..., :32].contiguous(), g, a, n, **kw(c))
    with pytest.raises(ValueError, match="gate must have the shape"):
        comp.compress(v, g[:, :8].contiguous(), a, n, **kw(c))
    with pytest.raises(ValueError, match="ape must be"):
        comp.compress(v, g, a[:2], n, **kw(c))
    with pytest.raises(ValueError, match=r"norm must be \[D\]"):
        comp.compress(v, g, a, n[None], **kw(c))
    with pytest.raises(ValueError, match=r"needs c\*D = 2\*16 = 32"):      # D is the norm's length
        comp.compress(v, g, a, n[:16], **kw(c))
    with pytest.raises(ValueError, match="contiguous"):
        comp.compress(torch.randn(1, 64, 16).transpose(1, 2), g, a, n, **kw(c))   # [1, 16, 64], not contiguous
    with pytest.raises(ValueError, match="row_start"):
        comp.compress(v, g, a, n, **kw(c), row_start=3, row_end=2)
    with pytest.raises(ValueError, match="row_end"):
        comp.compress(v, g, a, n, **kw(c), row_end=5)
    with pytest.raises(ValueError, match=r"out must be \[B, row_end - row_start, D\]"):
        comp.compress(v, g, a, n, **kw(c), out=torch.empty(1, 3, 32, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="out must be bfloat16"):
        comp.compress(v, g, a, n, **kw(c), out=torch.empty(1, 4, 32))
    with pytest.raises(ValueError, match="<= 1024"):
        big = Compressor(ratio=4, dim=2048, overlap=False, rope=None)
        comp.compress(torch.randn(1, 4, 2048), torch.randn(1, 4, 2048), torch.randn(4, 2048), torch.randn(2048),
                      **kw(big))
    with pytest.raises(ValueError, match="unknown compressor config"):
        comp.compress(v, g, a, n, **kw(c), config={"warps": 4})
    with pytest.raises(ValueError, match="slot_chunk"):
        comp.compress(v, g, a, n, **kw(c), config={"slot_chunk": 8})


def test_cuda_required_when_compiled(monkeypatch):
    """With compiled (non-interpreted) kernels, CPU tensors are refused before any launch."""
    monkeypatch.setattr(comp, "kernels_interpreted", lambda kernel: False)
    monkeypatch.setattr(rp, "kernels_interpreted", lambda kernel: False)
    c = make_spec(32, 4, True, 32, False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        comp.compress(*make_inputs(1, 16, c), **kw(c))
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        rp.apply_rope_(torch.zeros(2, 1, 64, dtype=torch.bfloat16), *tables(RoPE(dim=64), torch.arange(2)), 0)


@interpret
def test_rope_validation():
    cos, sin = tables(RoPE(dim=64), torch.arange(8))
    x = torch.zeros(4, 2, 128, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16"):
        rp.apply_rope_(x.float(), cos, sin, 0)
    with pytest.raises(ValueError, match="rot_dim = 64 > the row's channels Dv = 32"):
        rp.apply_rope_(torch.zeros(4, 2, 32, dtype=torch.bfloat16), cos, sin, 0)
    with pytest.raises(ValueError, match=r"the tables hold positions 0\.\.7 but position 9 is needed"):
        rp.apply_rope_(x, cos, sin, 6)
    with pytest.raises(ValueError, match=r"pos0 .* must be an int >= 0"):
        rp.apply_rope_(x, cos, sin, -1)
    with pytest.raises(ValueError, match="contiguous"):
        rp.apply_rope_(torch.zeros(4, 128, 2, dtype=torch.bfloat16).transpose(1, 2), cos, sin, 0)
    with pytest.raises(ValueError, match="contiguous fp32 table"):
        rp.apply_rope_(x, cos.double(), sin, 0)
    with pytest.raises(TypeError, match="must be a torch.Tensor table"):
        rp.apply_rope_(x, 64, sin, 0)
    with pytest.raises(ValueError, match=r"\[N, H, Dv\]"):
        rp.apply_rope_(torch.zeros(4, 128, dtype=torch.bfloat16), cos, sin, 0)


# ---------------------------------------------------------------------------------------
# IR for Hopper without a GPU
def test_compile_ir_sm90():
    """Runs with or without a GPU (under the interpreter compile_ir compiles in a child process)."""
    for ir in (comp_ir.compile_ir(dim=512, ratio=4, overlap=True, hadamard=False, rope_dim=64),
               comp_ir.compile_ir(dim=128, ratio=4, overlap=True, hadamard=True, rope_dim=64),
               rope_ir.compile_ir(heads=64, v_dim=512, rope_dim=64, inverse=True)):
        assert set(ir) == {"ttir", "ttgir", "llir", "ptx"}
        assert ir["ttgir"] and ir["ptx"]
        assert ".target sm_90" in ir["ptx"]
        assert re.search(r"ld\.global[\w:.]*\.v[24]\.", ir["ptx"]), "loads are not vectorized"
        assert "div.full.f32" not in ir["ptx"]


def test_fill_tables_in_slabs_equals_cos_sin():
    """A program's RoPE tables, built slab by slab in place (more than two slabs here), are bitwise the
    tables of every position at once; the planned transient is one slab's positions and angles."""
    rot = rotary(RoPE(dim=64, yarn=YaRN()))
    P = 2 * rope_tables.TABLE_SLAB + 100
    cos, sin = torch.full((P, 32), float("nan")), torch.full((P, 32), float("nan"))
    rope_tables.fill_tables(cos, sin, rot=rot)
    c, s = rope_tables.cos_sin(rot, torch.arange(P))
    assert torch.equal(cos, c) and torch.equal(sin, s)
    assert rope_tables.tables_temp_bytes(P, 64) == rope_tables.TABLE_SLAB * (8 + 4 + 32 * 4)
