"""The Triton indexer kernels in the interpreter (fp32 operands: the interpreter's bf16 tl.dot is wrong)."""
import pytest
import torch

from pipeline import reference as ref
from pipeline.metrics import tie_aware_recall

pytestmark = pytest.mark.interpret


def _inputs(B, S, HI, DI, m, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, S, HI, DI, generator=g)
    w = torch.randn(B, S, HI, generator=g) * (HI * DI) ** -0.5
    k = torch.randn(B, S // m, DI, generator=g)
    return q, w, k


@pytest.mark.parametrize("B,S,HI,DI,K,m,chunk", [
    (1, 200, 16, 32, 8, 4, 64),      # threshold path (rows longer than CAP = 16), diagonal tiles
    (2, 100, 64, 16, 12, 1, 64),     # m = 1, HI = 64 (BQ = 4), B = 2, partial last chunk
    (1, 96, 32, 64, 40, 1, 96),      # K close to T: whole-row sort path and -1 padding
])
def test_indexer_topk_matches_reference(B, S, HI, DI, K, m, chunk):
    from kernels_triton import indexer as ki
    q, w, k = _inputs(B, S, HI, DI, m, seed=S + K)
    got = ki.indexer_topk(q, w, k, K, m, chunk=chunk)
    exp = ref.indexer_topk(q, w, k, K, m)
    assert got.shape == exp.shape == (B, S, min(K, S // m)) and got.dtype == torch.int32
    for b in range(B):
        sc = ref.mask_invisible(ref.indexer_scores(q[b:b + 1], w[b:b + 1], k[b:b + 1])[0], torch.arange(S), m)
        recall, det = tie_aware_recall(got[b], sc, min(K, S // m), rel_tol=0.0)
        assert recall == 1.0 and det["duplicates"] == 0 and det["wrong_padding_rows"] == 0, det
    # random fp32 data has no ties: the sets are identical
    assert torch.equal(got.sort(-1).values, exp.sort(-1).values)


def test_score_kernel_tiles():
    """Visible scores equal the reference to fp32 rounding; the diagonal tile is -inf past each row's end."""
    from kernels_triton import indexer as ki
    S, HI, DI, m = 150, 16, 32, 4
    q, w, k = _inputs(1, S, HI, DI, m, seed=1)
    s0, n = 64, 70
    buf = torch.full((n, 64), float("nan"))
    gmax = torch.full((n, 4), float("nan"))
    ki.score_chunk(q[0, s0:s0 + n], w[0, s0:s0 + n], k[0], s0, m, buf, gmax)
    exp = ref.indexer_scores(q[:, s0:s0 + n], w[:, s0:s0 + n], k)[0]
    BQ = ki.score_block_queries(HI)
    for r in range(n):
        L = (s0 + r + 1) // m
        assert torch.allclose(buf[r, :L], exp[r, :L], rtol=1e-5, atol=1e-6)
        last = min((r // BQ) * BQ + BQ, n) - 1             # the program's most-seeing query
        t_end = (s0 + last + 1) // m                        # tiles written by the program end here
        assert torch.isneginf(buf[r, L:t_end]).all()         # masked in-kernel, from indices
        assert torch.isnan(buf[r, t_end:]).all()             # invisible tiles: never written
        ng = -(-t_end // 16)                                  # group maxima of the written tiles
        written = buf[r, :ng * 16].clone()
        written[torch.isnan(written)] = float("-inf")                      # the kernel masks past t_end
        assert torch.equal(gmax[r, :ng], written.view(ng, 16).amax(-1))
        assert torch.isnan(gmax[r, ng:]).all()


def test_select_ties_and_fallback():
    """Many equal values: ties go to the smaller index, also in the exact bisection fallback."""
    from kernels_triton import indexer as ki
    n, T, K = 6, 200, 8
    scores = torch.zeros(n, 256)
    scores[:, :T] = torch.randint(0, 3, (n, T)).float()   # > CAP candidates tie at the threshold
    scores[1, :T] = 1.0                                   # a row of one value
    scores[2, 50] = 5.0
    out = torch.full((n, K), -7, dtype=torch.int32)
    s_first = T - n          # m = 1: row r sees T - n + r + 1 rows
    gmax = scores.view(n, 16, 16).amax(-1)
    ki.select_chunk(scores, gmax, s_first, n, 1, K, K, out)
    for r in range(n):
        L = s_first + r + 1
        row = scores[r, :L].tolist()
        exp = sorted(range(L), key=lambda t: (-row[t], t))[:K]
        assert sorted(out[r].tolist()) == sorted(exp), (r, out[r].tolist(), exp)


def test_select_negative_zero_and_short_rows():
    from kernels_triton import indexer as ki
    n, K = 5, 4
    scores = torch.full((n, 64), float("nan"))
    scores[:, :8] = torch.tensor([-0.0, 0.0, -1.0, 0.0, -0.0, 2.0, -0.0, 0.0])
    W = 3
    out = torch.empty(n, W + K, dtype=torch.int32)
    gmax = torch.full((n, 4), float("nan"))
    # rows see 1..5 entries; NaNs never read; the window part is written too
    ki.select_chunk(scores, gmax, 0, n, 1, K, K, out, idx_offset=100, window=W)
    assert out[0].tolist() == [0, -1, -1] + [100, -1, -1, -1]
    assert out[3, :W].tolist() == [1, 2, 3]
    assert sorted(out[4, W:].tolist()) == [100, 101, 103, 104]   # -0.0 ties with +0.0: smaller indices win


def test_indexer_validation():
    from kernels_triton import indexer as ki
    q, w, k = _inputs(1, 64, 16, 32, 4, 0)
    with pytest.raises(ValueError, match=r"idx_w must be \[B, S, HI\]"):
        ki.indexer_topk(q, w[:, :10], k, 8, 4)
    with pytest.raises(ValueError, match=r"heads HI = 24 must be a power of two"):
        ki.indexer_topk(torch.randn(1, 64, 24, 32), torch.randn(1, 64, 24), k, 8, 4)
    with pytest.raises(TypeError, match=r"idx_w must be float32"):
        ki.indexer_topk(q, w.double(), k, 8, 4)
    with pytest.raises(ValueError, match=r"topk = 9000 > 8192"):
        ki.indexer_topk(q, w, k, 9000, 4)
    with pytest.raises(ValueError, match=r"must be contiguous"):
        ki.indexer_topk(q.transpose(2, 3).contiguous().transpose(2, 3), w, k, 8, 4)
