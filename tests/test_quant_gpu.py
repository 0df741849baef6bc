"""The quantisation kernels on the GPU at model sizes (docs/semantics.md section 5): bit-exact against
the PyTorch reference, the compressor's fused step, and the FP8 score kernel against float64 scores of
the dequantised operands (relative error and tie-aware recall)."""
import pytest
import torch

import csa_dsl
from kernels_triton.indexer import cost as icost
from kernels_triton.indexer import kernel as ikernel
from kernels_triton.indexer import naive as inaive
from kernels_triton.quant import kernel, naive
from pipeline.metrics import tie_aware_recall
from test_quant import same_packing

pytestmark = pytest.mark.gpu


def _same(a, b):
    both_nan = a.isnan() & b.isnan()
    return bool(((a.view(torch.int16) == b.view(torch.int16)) | both_nan).all())


@pytest.mark.parametrize("fmt,block,channels,D", [("e4m3", 64, 448, 512), ("e2m1", 32, 128, 128),
                                                  ("e4m3", 128, 128, 128)])
def test_rows_and_pack_bitwise(fmt, block, channels, D, fresh_seed):
    g = torch.Generator(device="cuda").manual_seed(fresh_seed)
    S = 32768
    x = (torch.randn(2, S, D, device="cuda", generator=g)
         * torch.logspace(-8, 3, S, device="cuda")[None, :, None]).bfloat16()
    x[0, 5, 3] = float("nan")
    x[1, 7] = 0.0
    out = torch.empty_like(x)
    kernel.quant_rows(x, out, fmt=fmt, block=block, channels=channels)
    assert _same(out, naive.quant_dequant(x, fmt, block, channels)), fresh_seed
    if channels == D:
        k8 = torch.empty(x.shape, dtype=kernel.packed_dtype(fmt), device="cuda")
        ks = torch.empty(x.shape[:-1], device="cuda")
        kernel.pack_rows(x, k8, ks, fmt=fmt, block=block)
        r8, rs = naive.fp8_rows(naive.quant_dequant(x, fmt, block))
        assert same_packing(x, k8, ks, r8, rs), fresh_seed
        # blocks decades apart in a row (1e-38..1e38): the small ones far below the row's e4m3 scale
        w = (torch.randn(S, D // block, block, device="cuda", generator=g)
             * 10.0 ** (torch.rand(S, D // block, 1, device="cuda", generator=g) * 76 - 38)).reshape(S, D).bfloat16()
        w8 = torch.empty(w.shape, dtype=kernel.packed_dtype(fmt), device="cuda")
        ws = torch.empty(S, device="cuda")
        kernel.pack_rows(w, w8, ws, fmt=fmt, block=block)
        r8, rs = naive.fp8_rows(naive.quant_dequant(w, fmt, block))
        assert same_packing(w, w8, ws, r8, rs), fresh_seed


# V3.2's e4m3 values on FP8 tensor cores (Indexer.fp8_mma): the accumulator keeps fewer bits than fp32, so a score
# is off by up to this much of its row's largest (measured 3.5e-4 to 4.3e-4, about 2^-11, on random inputs at
# 32,768 and 131,072: benchmarks/results/v32-fp8-mma-h200/; the bound leaves a factor of 4.5 for other inputs)
FP8_MMA_BOUND = 2.0 ** -9


@pytest.mark.parametrize("name", ["v4-flash", "v3.2", "v3.2:fp8-mma"])
def test_fp8_score_kernel_at_32k(name, fresh_seed):
    """The last 2,048 queries of S = 32,768 against all their visible keys: the FP8 kernel's scores against
    float64 scores of the dequantised operands, and its top-k against theirs. With V3.2's fp8_mma the scores are
    within FP8_MMA_BOUND of their row's largest, and the top-k exact up to ties within that."""
    base, _, variant = name.partition(":")
    fp8_mma = variant == "fp8-mma"
    spec = csa_dsl.preset(base)
    ix, m = spec.indexer, spec.ratio
    S, n = 32768, 2048
    T, s0 = S // m, S - n
    g = torch.Generator(device="cuda").manual_seed(fresh_seed)
    q = torch.randn(n, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(n, ix.heads, device="cuda", generator=g) * (ix.heads * ix.dim) ** -0.5
    k = torch.randn(T, ix.dim, device="cuda", generator=g).bfloat16()
    k8 = torch.empty(T, ix.dim, dtype=kernel.packed_dtype(ix.quant.format, fp8_mma), device="cuda")
    ks = torch.empty(T, device="cuda")
    kernel.pack_rows(k, k8, ks, fmt=ix.quant.format, block=ix.quant.block)
    q8, qs = torch.empty(q.shape, dtype=k8.dtype, device="cuda"), torch.empty(n, ix.heads, device="cuda")
    kernel.pack_rows(q, q8, qs, fmt=ix.quant.format, block=ix.quant.block)
    got = torch.full((n, icost.score_ld(T)), float("nan"), device="cuda")
    ikernel.score_chunk_fp8(q8, qs, w, k8, ks, got, s_first=s0, ratio=m)
    qd = naive.quant_dequant(q, ix.quant.format, ix.quant.block)
    kd = naive.quant_dequant(k, ix.quant.format, ix.quant.block)
    pos = torch.arange(s0, s0 + n, device="cuda")
    worst = 0.0
    for r0 in range(0, n, 256):
        exact = (torch.einsum("nhd,td->nht", qd[r0:r0 + 256].double(), kd.double()).relu()
                 * w[r0:r0 + 256].double()[..., None]).sum(1)
        exact = inaive.mask_invisible(exact, pos[r0:r0 + 256], m)
        vis = torch.isfinite(exact)
        sc = got[r0:r0 + 256, :T]
        assert not sc[vis].isnan().any()
        row_max = torch.where(vis, exact.abs(), 0).amax(1, keepdim=True)
        worst = max(worst, ((sc.double() - exact).abs() / row_max)[vis].max().item())
        sel = torch.empty(256, ix.topk, dtype=torch.int32, device="cuda")
        ikernel.select_chunk(got[r0:r0 + 256], sel, s_first=s0 + r0, ratio=m, k_eff=min(ix.topk, T), topk=ix.topk)
        rec, det = tie_aware_recall(sel, exact.float(), min(ix.topk, T), **({"rel_tol": FP8_MMA_BOUND}
                                                                           if fp8_mma else {}))
        assert rec == 1.0 and det["duplicates"] == 0, (det, fresh_seed)
    print(f"{name}: worst score error {worst:.3g} of the row's largest")
    # fp32 accumulation of exact products: the relative error of an fp32 sum of 128 terms, not FP8's; with fp8_mma
    # the FP8 accumulator's
    assert worst < (FP8_MMA_BOUND if fp8_mma else 1e-5), (worst, fresh_seed)
