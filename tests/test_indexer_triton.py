"""The Triton indexer kernels in the interpreter (fp32 operands: the interpreter's bf16 tl.dot is wrong;
the public csa_dsl.indexer_topk casts bf16 operands itself, tested with bf16 below)."""
import re

import pytest
import torch
import triton
import triton.language as tl

import csa_dsl
from kernels_triton.indexer import kernel as ki
from kernels_triton.indexer import naive as ref
from pipeline.metrics import tie_aware_recall
from ptxas_report import ptxas_usage

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
    q, w, k = _inputs(B, S, HI, DI, m, seed=S + K)
    got = csa_dsl.indexer_topk(q, w, k, K, m, backend="triton", chunk=chunk)
    exp = csa_dsl.indexer_topk(q, w, k, K, m, backend="torch")
    assert got.shape == exp.shape == (B, S, min(K, S // m)) and got.dtype == torch.int32
    for b in range(B):
        sc = ref.mask_invisible(ref.indexer_scores(q[b:b + 1], w[b:b + 1], k[b:b + 1])[0], torch.arange(S), m)
        recall, det = tie_aware_recall(got[b], sc, min(K, S // m), rel_tol=0.0)
        assert recall == 1.0 and det["duplicates"] == 0 and det["wrong_padding_rows"] == 0, det
    # random fp32 data has no ties: the sets are identical
    assert torch.equal(got.sort(-1).values, exp.sort(-1).values)


def test_score_kernel_tiles():
    """Visible scores equal the reference to fp32 rounding; the diagonal tile is -inf past each row's end."""
    S, HI, DI, m = 150, 16, 32, 4
    q, w, k = _inputs(1, S, HI, DI, m, seed=1)
    s0, n = 64, 70
    buf = torch.full((n, 64), float("nan"))
    ki.score_chunk(q[0, s0:s0 + n], w[0, s0:s0 + n], k[0], buf, s_first=s0, ratio=m)
    exp = ref.indexer_scores(q[:, s0:s0 + n], w[:, s0:s0 + n], k)[0]
    BQ = ki.score_block_queries(HI)
    for r in range(n):
        L = (s0 + r + 1) // m
        assert torch.allclose(buf[r, :L], exp[r, :L], rtol=1e-5, atol=1e-6)
        last = min((r // BQ) * BQ + BQ, n) - 1             # the program's most-seeing query
        t_end = (s0 + last + 1) // m                        # tiles written by the program end here
        assert torch.isneginf(buf[r, L:t_end]).all()         # masked in-kernel, from indices
        assert torch.isnan(buf[r, t_end:]).all()             # invisible tiles: never written


def _select_exactly(scores: torch.Tensor, K: int, s_first: int) -> torch.Tensor:
    """select_chunk's lists of `scores` (ratio 1: row r sees s_first + r + 1 columns), each checked against the
    exact top-K of its row (ties to the smaller column)."""
    out = torch.full((scores.shape[0], K), -7, dtype=torch.int32)
    ki.select_chunk(scores, out, s_first=s_first, ratio=1, k_eff=K, topk=K)
    for r in range(scores.shape[0]):
        L = s_first + r + 1
        row = scores[r, :L].tolist()
        exp = sorted(range(L), key=lambda t: (-row[t], t))[:K]
        assert sorted(out[r].tolist()) == sorted(exp), (r, out[r].tolist(), exp)
    return out


def test_select_ties_and_fallback():
    """Many equal values: ties go to the smaller index, also in the exact bisection fallback."""
    n, T, K = 6, 200, 8
    scores = torch.zeros(n, 256)
    scores[:, :T] = torch.randint(0, 3, (n, T)).float()   # > CAP candidates tie at the threshold
    scores[1, :T] = 1.0                                   # a row of one value
    scores[2, 50] = 5.0
    _select_exactly(scores, K, s_first=T - n)          # m = 1: row r sees T - n + r + 1 rows


def test_select_any_row_width_and_a_nan_threshold():
    """Pass 2 reads 16-byte groups of 4 columns where the rows are a multiple of 4 wide, and single columns
    otherwise: the same lists from a 62-column and a 64-column copy of the scores (rows longer than CAP: the
    threshold path, its float compare included), equal to the exact top-k (NaN below every number, ties to the
    smaller row). A row where fewer than K of the CAP groups hold a number has NaN's key as threshold: it takes
    the exact walk."""
    n, K, s_first = 12, 8, 40                      # CAP 16; rows see 41..52 of 62 columns
    g = torch.Generator().manual_seed(5)
    wide = torch.randn(n, 64, generator=g).round(decimals=1)      # ties as well
    wide[3, :] = float("nan")
    wide[3, [2, 9, 30, 44]] = torch.tensor([1.0, -3.0, 0.5, 7.0])    # 4 numbers: < K groups hold one
    wide[5, ::3] = -0.0
    narrow = wide[:, :62].clone()
    lists = []
    for scores in (narrow, wide, wide[:, :62]):
        out = torch.full((n, K), -7, dtype=torch.int32)
        ki.select_chunk(scores, out, s_first=s_first, ratio=1, k_eff=K, topk=K)
        lists.append(out)
    for r in range(n):
        L = s_first + r + 1
        row = [float("-inf") if v != v else v for v in wide[r, :L].tolist()]     # NaN: lowest, by index after
        exp = sorted(range(L), key=lambda t: (-row[t], wide[r, t].isnan().item(), t))[:K]
        for out in lists:
            assert sorted(out[r].tolist()) == sorted(exp), (r, out[r].tolist(), exp)


def test_select_threshold_bound_and_the_candidates_range():
    """The threshold is bisected to within 2^TAU_SLACK keys below the K-th largest group maximum only (a lower
    bound: a few more candidates), and the K-th key among the candidates between it and the largest one: the
    same lists as the exact top-k. The threshold is a group maximum's key, a float's: rows where a bound
    2^TAU_SLACK keys below it would leave the floats (a threshold of -inf, or of -3.4e38, within 4,096 keys of
    it) take -inf, so every column is a candidate and the exact walk writes the row; a row whose candidates all
    share one key (lo = hi) takes the first K of them; group maxima within fewer than 2^TAU_SLACK keys of each
    other need no round."""
    assert 0 < ki.TAU_SLACK < 23
    n, K, s_first = 6, 8, 40                       # CAP 16; rows see 41..46 columns
    g = torch.Generator().manual_seed(11)
    scores = torch.randn(n, 64, generator=g) * 100
    scores[0, :] = float("-inf")
    scores[0, [3, 20, 33]] = torch.tensor([1.0, 2.0, -5.0])          # 3 numbers, 13 groups of -inf
    scores[1, :] = -1.0
    scores[1, :11] = 5.0                              # 11 groups hold 5.0: all candidates share its key
    scores[2, :] = torch.finfo(torch.float32).min     # -3.4e38, one key above -inf's
    scores[2, [7, 30]] = torch.tensor([0.25, -0.5])
    scores[3] = scores[3].abs() + 1e-3                # positive: candidates over several exponents
    scores[4] = 1.0 + torch.rand(64, generator=g) * 2.0 ** -14     # the group maxima within 2^9 keys: no round
    scores[5] = -scores[5].abs() - 1                  # a negative threshold, 2 positive candidates: the keys
    scores[5, [2, 17]] = torch.tensor([3.0, 4.0])     # differ in their top bit (9 candidates: the fast path)
    out = _select_exactly(scores, K, s_first)
    assert sorted(out[1].tolist()) == list(range(K))
    # the K-th key far above the threshold, sharing only the sign bit with it: group 0 (every 16th column) holds
    # the K + 1 largest (the smallest of them first, so that taking all K + 1 would show), groups 1-15 one value
    # 1 + g/64 each, the rest 0: the threshold is 1 + 9/64, 16 candidates
    wide = torch.zeros(2, 256)
    wide[:, 0:144:16] = 100.0 + torch.arange(9.0)
    wide[:, 1:16] = 1.0 + torch.arange(1, 16) / 64
    wide[1] = -wide[1]              # all at or below 0: the K largest are the 0.0 ties, by index
    out = torch.full((2, K), -7, dtype=torch.int32)
    ki.select_chunk(wide, out, s_first=200, ratio=1, k_eff=K, topk=K)
    assert sorted(out[0].tolist()) == list(range(16, 144, 16)), out[0].tolist()
    zeros = [t for t in range(201) if wide[1, t] == 0][:K]
    assert sorted(out[1].tolist()) == zeros, out[1].tolist()


@pytest.mark.parametrize("dist", ["normal", "sorted_up", "sorted_down", "few_values"])
def test_select_long_rows_every_branch(dist):
    """Rows far longer than CAP (K = 4 -> CAP = 16): L <= K, L <= CAP, the threshold path with an odd
    number of blocks, and (few_values: > CAP candidates tie at the threshold) the exact fallback."""
    K, ld = 4, 320
    n = 8 if dist == "few_values" else 40   # the exact fallback is slow in the interpreter
    g = torch.Generator().manual_seed(len(dist))
    if dist == "normal":
        scores = torch.randn(n, ld, generator=g)
    elif dist == "sorted_up":
        scores = torch.sort(torch.randn(n, ld, generator=g), dim=-1).values
    elif dist == "sorted_down":
        scores = torch.sort(torch.randn(n, ld, generator=g), dim=-1, descending=True).values
    else:
        scores = torch.randint(0, 3, (n, ld), generator=g).float()
    W = 5
    out = torch.full((n, W + K), -7, dtype=torch.int32)
    s_first = 0
    ratio = 1
    # rows r see r+1 entries (m = 1) -- then a second launch with rows 280..319
    for s_first in (0, 280):
        ki.select_chunk(scores, out, s_first=s_first, ratio=ratio, k_eff=K, topk=K, idx_offset=1000, window=W)
        for r in range(n):
            L = s_first + r + 1
            row = scores[r, :L].tolist()
            exp = sorted(range(L), key=lambda t: (-row[t], t))[:K]
            exp = [e + 1000 for e in exp] + [-1] * (K - len(exp))
            assert sorted(out[r, W:].tolist()) == sorted(exp), (dist, s_first, r)
            sel = [i for i in out[r, W:].tolist() if i >= 0]
            assert sel == sorted(sel), (dist, s_first, r)     # in index order, whichever branch took the row
            s = s_first + r
            win = [j if j <= s else -1 for j in range(max(0, s - W + 1), max(0, s - W + 1) + W)]
            assert out[r, :W].tolist() == win


@pytest.mark.parametrize("dist", ["normal", "sorted_up", "one_segment_ties"])
def test_select_rows_over_every_segment(dist):
    """Rows long enough for all of pass 2's segments (each a warp's contiguous part of the row, its candidates
    in slots of its own): the top K in index order, whether the candidates spread over every segment, sit in
    the last one, or tie in one segment past CAP (then the exact fallback)."""
    K, n, ld = 8, 6, 3000
    g = torch.Generator().manual_seed(7)
    scores = torch.randn(n, ld, generator=g)
    if dist == "sorted_up":
        scores = torch.sort(scores, dim=-1).values
    elif dist == "one_segment_ties":
        scores[:, 1500:1600] = 100.0                      # 100 equal maxima, > CAP = 16, in one segment
    out = torch.full((n, K), -7, dtype=torch.int32)
    s_first = ld - n
    ki.select_chunk(scores, out, s_first=s_first, ratio=1, k_eff=K, topk=K)
    for r in range(n):
        L = s_first + r + 1
        row = scores[r, :L].tolist()
        exp = sorted(sorted(range(L), key=lambda t: (-row[t], t))[:K])
        assert out[r].tolist() == exp, (dist, r)


@pytest.mark.parametrize("dist", ["normal", "sorted_up"])
def test_select_eight_segments(dist):
    """Top-2,048 (CAP 4,096) walks pass 2 in 8 segments, a warp each (cost.select_segments): the top K in index order
    on rows long enough for every segment, the candidates spread over all of them or all in the last one; its
    candidate buffer has CAP slots for each of the 8."""
    from kernels_triton.indexer import cost
    K, n = 2048, 2
    assert [cost.select_segments(k) for k in (4, 512, 1024, 2048, 4096, 8192)] == [4, 4, 4, 8, 8, 8]
    assert cost.candidate_slots(K) == 8 * 4096
    s_first = 40000
    g = torch.Generator().manual_seed(11)
    scores = torch.randn(n, s_first + n, generator=g)
    if dist == "sorted_up":
        scores = torch.sort(scores, dim=-1).values
    out = _select_exactly(scores, K, s_first)
    for r in range(n):
        assert out[r].tolist() == sorted(out[r].tolist())


def test_select_refuses_a_candidate_buffer_too_small():
    """A caller's candidate buffer of the old layout (CAP int64 slots a row) is refused before any launch."""
    from kernels_triton.indexer.cost import candidate_slots, select_capacity
    scores, out = torch.zeros(4, 64), torch.zeros(4, 8, dtype=torch.int32)
    for bad in (torch.empty(4, select_capacity(8), dtype=torch.int64), torch.empty(4, candidate_slots(8) - 1,
                                                                                   dtype=torch.int32)):
        with pytest.raises(ValueError, match="cand must be int32"):
            ki.select_chunk(scores, out, bad, s_first=60, ratio=1, k_eff=8, topk=8)


def test_select_negative_zero_and_short_rows():
    n, K = 5, 4
    scores = torch.full((n, 64), float("nan"))
    scores[:, :8] = torch.tensor([-0.0, 0.0, -1.0, 0.0, -0.0, 2.0, -0.0, 0.0])
    W = 3
    out = torch.empty(n, W + K, dtype=torch.int32)
    # rows see 1..5 entries; NaNs never read; the window part is written too
    ki.select_chunk(scores, out, s_first=0, ratio=1, k_eff=K, topk=K, idx_offset=100, window=W)
    assert out[0].tolist() == [0, -1, -1] + [100, -1, -1, -1]
    assert out[3, :W].tolist() == [1, 2, 3]
    assert sorted(out[4, W:].tolist()) == [100, 101, 103, 104]   # -0.0 ties with +0.0: smaller indices win


def test_indexer_validation():
    q, w, k = _inputs(1, 64, 16, 32, 4, 0)
    with pytest.raises(ValueError, match=r"idx_w must be \[B, S, HI\]"):
        csa_dsl.indexer_topk(q, w[:, :10], k, 8, 4, backend="triton")
    with pytest.raises(ValueError, match=r"indexer heads = 300: the Triton score kernel takes 1\.\.256"):
        csa_dsl.indexer_topk(torch.randn(1, 64, 300, 32), torch.randn(1, 64, 300), k, 8, 4, backend="triton")
    with pytest.raises(TypeError, match=r"idx_w must be float32"):
        csa_dsl.indexer_topk(q, w.double(), k, 8, 4, backend="triton")
    with pytest.raises(ValueError, match=r"indexer topk = 9000: the Triton selection takes 1\.\.8192"):
        csa_dsl.indexer_topk(q, w, k, 9000, 4, backend="triton")
    with pytest.raises(ValueError, match=r"must be contiguous"):
        csa_dsl.indexer_topk(q.transpose(2, 3).contiguous().transpose(2, 3), w, k, 8, 4, backend="triton")


@pytest.mark.parametrize("HI,DI", [(48, 96), (12, 40)])
def test_heads_and_dims_not_powers_of_two(HI, DI):
    """HI and DI are padded inside the kernel (masked loads): same selections as the reference."""
    q, w, k = _inputs(1, 160, HI, DI, 4, seed=HI + DI)
    got = csa_dsl.indexer_topk(q, w, k, 6, 4, backend="triton", chunk=64)
    exp = csa_dsl.indexer_topk(q, w, k, 6, 4, backend="torch")
    assert torch.equal(got.sort(-1).values, exp.sort(-1).values)


def test_bf16_operands_are_right_in_the_interpreter():
    """The documented dtype: bf16 operands give the reference's selection (the launcher casts them to
    fp32 for the interpreter, whose tl.dot on bf16 is wrong)."""
    q, w, k = _inputs(1, 256, 16, 32, 4, seed=3)
    q, k = q.bfloat16(), k.bfloat16()
    got = csa_dsl.indexer_topk(q, w, k, 8, 4, backend="triton", chunk=128)
    exp = csa_dsl.indexer_topk(q, w, k, 8, 4, backend="torch")
    assert torch.equal(got.sort(-1).values, exp.sort(-1).values)      # the list's order is free


def test_nan_scores_rank_last_every_branch():
    """NaN scores rank below every number in each selection branch (short rows, threshold path with NaN
    groups and NaN padding, exact fallback), as the reference's order keys say."""
    g = torch.Generator().manual_seed(1)
    n, ld, K = 8, 320, 4
    for frac in (0.3, 0.9, 1.0):
        scores = torch.randn(n, ld, generator=g)
        scores[torch.rand(n, ld, generator=g) < frac] = float("nan")
        scores[0, :] = float("nan")
        scores[0, 17] = 1.0
        scores[1, :] = 2.0                   # all tied: the exact fallback
        scores[1, 40:50] = float("nan")
        out = torch.full((n, K), -7, dtype=torch.int32)
        s_first = 300 - n
        ki.select_chunk(scores, out, s_first=s_first, ratio=1, k_eff=K, topk=K)
        exp = ref.topk_select(scores[None], torch.arange(s_first, s_first + n), 1, K)[0]
        assert torch.equal(out.sort(-1).values, exp.sort(-1).values), frac
        assert 17 in out[0].tolist()


def _loops(ttgir: str, holding: str) -> list:
    """The bodies of the scf.for loops of a TTGIR module whose text holds `holding`."""
    lines, out = ttgir.splitlines(), []
    for start in (i for i, ln in enumerate(lines) if "scf.for" in ln):
        depth, body = 0, []
        for ln in lines[start:]:
            depth += ln.count("{") - ln.count("}")
            body.append(ln)
            if depth <= 0:
                break
        if holding in "\n".join(body):
            out.append("\n".join(body))
    return out


def test_score_tiles_leave_without_shared_memory():
    """The compiled FP8 score kernel (sm_90, no GPU): every key-tile walk, unpacked and the two packed ones,
    stores each tile's scores from the MMA layout by predicated st.global (no layout conversion: no
    shared-memory round trip and its two barriers a tile; 2.28 -> 2.12 ms a chunk unpacked, 0.56 -> 0.53 ms a
    packed one, docs/performance.md; no spill under the register cap, tests/test_varlen.py)."""
    from kernels_triton.indexer import ir as indexer_ir
    # unpacked: 64 dims, since V4's 64 x 128 unpacked walk is the Gluon kernel (test_gluon_score_walk_compiled)
    for varlen, walks, dim in ((False, 1, 64), (True, 2, 128)):
        loops = _loops(indexer_ir.compile_ir("score_fp8", dim=dim, varlen=varlen)["ttgir"], "ttng.warp_group_dot ")
        assert len(loops) == walks, varlen
        for walk in loops:
            assert "ttg.convert_layout" not in walk and "tt.store" not in walk
            assert walk.count("st.global.b32") == 1


def _ptx_loop(ptx: str) -> str:
    """The body of the PTX's innermost loop (from its 'Inner Loop Header' label to the loop's exit label)."""
    start = ptx.index("Inner Loop Header")
    return ptx[start:ptx.index("_crit_edge", start)]


def test_gluon_score_walk_compiled():
    """V4's FP8 score walk (64 heads x 128 dims, unpacked) is the Gluon kernel, compiled for sm_90a without a GPU,
    as the composed program runs it (with the selection's group maxima) and without them: consumer warpgroups
    that share each key tile a producer warp brings by TMA (no cp.async, no key-tile addresses in the consumers),
    each loop one e4m3 wgmma a K step. With the maxima four consumers of 2 queries (m64n128k32, 112-120 registers
    by setmaxnreg), without them two of 4 (m64n256k32, 240; docs/performance.md, "Four consumer warpgroups"). The
    head sum leaves with no shuffle (the quad's partials cross lanes by one warp-local shared-memory transpose);
    a thread stores BQ / 2 scores a tile, not the 8 of the Triton walk, and as many maxima where a phase ends; the
    producer keeps 24 registers, and nothing spills."""
    from kernels_triton.indexer import ir as indexer_ir
    from ptxas_report import assembled, sass_loops
    # (maxima, consumers, MMA shape, setmaxnreg values, warps by warpgroup, stores a loop, most instructions a loop)
    for gm, nc, mma, maxnreg, warps, stores, most in ((True, 4, "m64n128k32", {"120", "112", "24"}, 20, 2, 210),
                                                      (False, 2, "m64n256k32", {"240", "24"}, 12, 2, 350)):
        levels = indexer_ir.compile_ir("score_fp8", group_maxima=gm)
        assert levels["ttir"].startswith("// Gluon kernel _score_gluon")
        ptx = levels["ptx"]
        assert ptx.count(f"wgmma.mma_async.sync.aligned.{mma}.f32.e4m3.e4m3") == 4 * nc        # K = 128: 4 steps
        assert "cp.async.cg" not in ptx
        assert set(re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", ptx)) >= maxnreg
        regs, spills = ptxas_usage(ptx)
        assert warps * 32 * regs <= 65536 and spills == 0, (regs, spills)     # the producer's warp: a warpgroup
        loops = sass_loops(assembled(ptx)[1])
        consumers = [lp for lp in loops if "QGMMA" in lp]
        producer = [lp for lp in loops if "UTMALDG" in lp]
        assert len(consumers) == nc and len(producer) == 1, [len(lp) for lp in loops]
        for lp in consumers:
            assert lp.count("QGMMA") == 4 and "LDGSTS" not in lp and "SHFL" not in lp and "LDSM" in lp
            assert "STL" not in lp and "LDL" not in lp
            assert lp.count("STG") == stores, lp.count("STG")
            assert len(lp) <= most, len(lp)     # 2 x 4: 342; the one-warpgroup cp.async walk before it took 384
    # the kernels the other walks run stay Triton's: packed rows, other sizes
    assert not indexer_ir.compile_ir("score_fp8", varlen=True)["ttir"].startswith("// Gluon")
    assert not indexer_ir.compile_ir("score_fp8", heads=32)["ttir"].startswith("// Gluon")


@pytest.mark.parametrize("fp8_mma", [True, False])
def test_gluon_walk_at_ratio_1_does_not_spill(fp8_mma):
    """V3.2's walk (ratio 1: raw key rows; CAP 4,096 group maxima) takes four consumers of 2 queries as V4's does:
    the opaque zero in its store bound (score_gluon._ADD_OPAQUE_ZERO) keeps ptxas from the spill it made there (7
    local loads and a store a tile in the 112-register consumers), on FP8 (fp8_mma) and bf16 operands."""
    from kernels_triton.indexer import ir as indexer_ir
    from ptxas_report import assembled, sass_loops
    ptx = indexer_ir.compile_ir("score_fp8", ratio=1, topk=2048, q_format="e4m3", group_maxima=True,
                                fp8_mma=fp8_mma)["ptx"]
    assert "%dynamic_smem_size" in ptx
    assert ptxas_usage(ptx)[1] == 0
    consumers = [lp for lp in sass_loops(assembled(ptx)[1]) if "QGMMA" in lp or "HGMMA" in lp]
    assert len(consumers) == 4, [len(lp) for lp in consumers]
    for lp in consumers:
        assert "STL" not in lp and "LDL" not in lp and len(lp) <= 220, len(lp)


def test_gluon_walk_takes_64_by_128_only():
    """Which scores the Gluon walk takes (the rest go to _score_kernel), which shape it takes, and a bad `walk`
    refused before launch."""
    from kernels_triton.indexer.score_gluon import WALK_2X4, WALK_4X2, gluon_walk, gluon_walk_fits
    fp8 = torch.float8_e4m3fn
    for dt in (fp8, torch.bfloat16):        # FP8 packed values; bf16 raw operands or V3.2's e4m3 values as bf16
        assert gluon_walk_fits(64, 128, dt, packed=False)
        assert not gluon_walk_fits(64, 128, dt, packed=True)
        assert not gluon_walk_fits(32, 128, dt, packed=False) and not gluon_walk_fits(64, 64, dt, packed=False)
    assert not gluon_walk_fits(64, 128, torch.float32, packed=False)
    # four consumers of 2 queries with the group maxima (at every ratio), two of 4 without
    assert gluon_walk(True) == WALK_4X2 and gluon_walk(False) == WALK_2X4
    q8, qs, w = torch.zeros(4, 64, 128), torch.ones(4, 64), torch.zeros(4, 64)
    k8, ks, out = torch.zeros(8, 128), torch.ones(8), torch.zeros(4, 64)
    with pytest.raises(ValueError, match="walk must be"):
        ki.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=0, ratio=4, walk="gluon")
    # the group maxima come from the Gluon walk only (here the interpreter's Triton walk would run)
    with pytest.raises(ValueError, match="gmax is written by the Gluon walk only"):
        ki.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=0, ratio=4, gmax=torch.zeros(4, 1024))
    from kernels_triton.indexer.score_gluon import group_maxima_fit
    assert group_maxima_fit(64, 128, fp8, False, 512) and group_maxima_fit(64, 128, fp8, False, 1024)
    assert not group_maxima_fit(64, 128, fp8, False, 16)          # CAP 32: not whole 64-key tiles a phase
    assert not group_maxima_fit(64, 128, fp8, True, 512)


def _rank_keys(x: torch.Tensor) -> torch.Tensor:
    """The selection's uint32 rank keys (kernel._rank_key) as int64: NaN 0, then the float order."""
    return torch.where(x.isnan(), 0, ref.order_key(x).long() + 2 ** 31)


@triton.jit
def _threshold_range_probe(gm_ptr, out_ptr, k, CAP: tl.constexpr):
    offs = tl.arange(0, CAP)
    gm = tl.load(gm_ptr + tl.program_id(0) * CAP + offs)
    lo, hi = ki._threshold_range(gm, ki._rank_key(gm), k, CAP)
    tl.store(out_ptr + tl.program_id(0) * 2, lo.to(tl.int64))
    tl.store(out_ptr + tl.program_id(0) * 2 + 1, hi.to(tl.int64))


def _threshold_ranges(rows: torch.Tensor, k: int) -> torch.Tensor:
    """kernel._threshold_range on each row of group maxima: [rows, 2] int64 keys (lo, hi)."""
    out = torch.zeros(rows.shape[0], 2, dtype=torch.int64)
    _threshold_range_probe[(rows.shape[0],)](rows.contiguous(), out, k, CAP=rows.shape[1])
    return out


@triton.jit
def _kth_largest_probe(x_ptr, out_ptr, k, n_has, SLACK: tl.constexpr, N: tl.constexpr):
    offs = tl.arange(0, N)
    u = ki._rank_key(tl.load(x_ptr + tl.program_id(0) * N + offs))
    has = offs < n_has
    lo = tl.min(tl.where(has, u, ki.UINT32_MAX), axis=0)
    hi = tl.max(tl.where(has, u, 0), axis=0)
    tl.store(out_ptr + tl.program_id(0), ki._kth_largest_key(u, has, k, lo, hi, SLACK).to(tl.int64))


@pytest.mark.parametrize("slack", [0, 12])
def test_kth_largest_key_stops_at_an_exact_count(slack):
    """_kth_largest_key's bisection ends at a probe with exactly K keys at or above it, or where its range is
    narrower than 2^SLACK keys, and returns the smallest counted key at or above its bound: the K-th largest
    itself at SLACK 0, a counted key at most that and less than 2^SLACK below it otherwise. Rows where the
    probes can hit an exact count (distinct values) and where they cannot (ties across the K-th, one value,
    NaN and infinities), with keys past n_has not counted."""
    n, k, n_has = 64, 9, 50
    g = torch.Generator().manual_seed(3 + slack)
    rows = torch.randn(8, n, generator=g)
    rows[1] = rows[1].round()                                  # ties across the K-th
    rows[2] = -2.0                                             # one value
    rows[3, ::2] = float("nan")
    rows[4, :20] = float("inf")                                # the K-th is +inf
    rows[5] = 1.0 + torch.arange(n) * 2.0 ** -23               # adjacent keys
    rows[6, n_has:] = 1e9                                      # past n_has: larger, not counted
    rows[7, :k - 1] = 5.0                                      # K - 1 above, then a tie of 2 at the K-th
    rows[7, k - 1:k + 1] = 4.0
    out = torch.zeros(rows.shape[0], dtype=torch.int64)
    _kth_largest_probe[(rows.shape[0],)](rows.contiguous(), out, k, n_has, SLACK=slack, N=n)
    keys = _rank_keys(rows)[:, :n_has]
    kth = keys.sort(1, descending=True).values[:, k - 1]
    assert (out <= kth).all() and (kth - out < 2 ** slack).all(), (out, kth)
    assert ((keys == out[:, None]).any(1)).all()               # a counted key
    if slack == 0:
        assert torch.equal(out, kth)


def test_select_threshold_range_holds_the_kth_maximum():
    """The threshold's bisection starts from a range of keys that holds the K-th largest group maximum: the
    maxima's mean -/+ half their spread where one count each way confirms it, else their smallest and largest
    key. Checked for every row that at least K keys are >= lo and fewer than K are > hi (so the bisection ends
    at the same K-th key); that the guess is taken on group maxima of scores of both signs, where its range is
    far narrower than the smallest and largest key's (12 rounds at most against 19); and that a bimodal row,
    whose K-th maximum lies outside the guess, and rows of NaN, infinities or one value fall back or stay
    right."""
    k, cap = 32, 64
    g = torch.Generator().manual_seed(5)
    both = torch.randn(8, cap, 32, generator=g).amax(-1) * 0.3 - 0.45     # maxima of 32 scores, both signs
    assert ((both < 0).any(1) & (both > 0).any(1)).all()
    odd = torch.randn(7, cap, generator=g)
    odd[0, :32], odd[0, 32:] = -100.0, 100.0                                # bimodal: the guess is rejected
    odd[1] = float("nan")
    odd[2, ::3] = float("nan")
    odd[3, 5] = float("inf")
    odd[4, :40] = float("-inf")
    odd[5] = 2.5                                                            # one value: lo = hi
    odd[6, 7] = 3e38                                                        # its square overflows
    rows = torch.cat([both, odd])
    got = _threshold_ranges(rows, k)
    keys = _rank_keys(rows)
    lo, hi = got[:, :1], got[:, 1:]
    assert ((keys >= lo).sum(1) >= k).all() and ((keys > hi).sum(1) < k).all()
    kth = keys.sort(1, descending=True).values[:, k - 1]
    assert ((lo[:, 0] <= kth) & (kth <= hi[:, 0])).all()
    # the bisection's rounds are log2(hi - lo) less TAU_SLACK: 19 from the smallest and the largest key here
    rounds = lambda lo, hi: max(int(hi - lo).bit_length() - ki.TAU_SLACK, 0)      # noqa: E731
    for r in range(both.shape[0]):
        assert rounds(keys[r].min(), keys[r].max()) == 19
        assert rounds(lo[r, 0], hi[r, 0]) <= 12, (r, hex(lo[r, 0]), hex(hi[r, 0]))
    assert lo[both.shape[0], 0] == keys[both.shape[0]].min() and hi[both.shape[0], 0] == keys[both.shape[0]].max()


def test_select_takes_the_scores_group_maxima():
    """select_chunk with `gmax` (the group maxima the Gluon walk keeps) skips its pass 1 and gives the same lists:
    gmax from naive.group_maxima (NaN rows, NaN groups, -0.0, infinite maxima, rows shorter and longer than CAP),
    and a gmax that is not the maxima changes them (so the kernel reads it)."""
    from kernels_triton.indexer.cost import candidate_slots, select_capacity
    topk, m, s_first, n = 8, 1, 5, 40
    cap = select_capacity(topk)                 # 16: rows from 17 visible columns on take the threshold path
    g = torch.Generator().manual_seed(3)
    sc = torch.randn(n, 64, generator=g)
    sc[3] = float("nan")                        # a row of NaN: every group NaN
    sc[10, ::16] = float("nan")                 # group 0 of row 10 all NaN
    sc[20, :30] = -0.0
    sc[30] = float("-inf")                      # -inf groups and one +inf: infinite maxima, not the largest floats
    sc[30, 20] = float("inf")
    gm = ref.group_maxima(sc, s_first, m, cap)
    assert gm[3].isnan().all() and gm[10, 0].isnan()
    assert gm[30, 4] == float("inf") and (gm[30, torch.arange(cap) != 4] == float("-inf")).all()
    lists = []
    for gmax in (None, gm, torch.full_like(gm, 1e30)):
        out = torch.full((n, topk), -7, dtype=torch.int32)
        ki.select_chunk(sc, out, torch.empty(n, candidate_slots(topk), dtype=torch.int32), s_first=s_first,
                        ratio=m, k_eff=topk, topk=topk, gmax=gmax)
        lists.append(out)
    assert torch.equal(lists[0], lists[1])
    assert not torch.equal(lists[0], lists[2])        # tau above every score: too few candidates, other lists
    with pytest.raises(ValueError, match="gmax must be fp32"):
        ki.select_chunk(sc, lists[0], None, s_first=s_first, ratio=m, k_eff=topk, topk=topk, gmax=gm[:, :8])


def test_select_pass2_stays_inside_warps():
    """The compiled selection (sm_90, no GPU) walks pass 2 in [4, 128] tiles of a layout that puts one row
    segment in one warp, and its loop holds no layout conversion (shared memory and barriers): each tile is
    compacted by warp votes and the candidates leave by predicated st.global. What made it 0.67 -> 0.40 ms
    (benchmarks/results/select-h200/); then 16-byte loads and float compares, 0.39 -> 0.33 ms
    (benchmarks/results/select2-h200/); then 4 tiles loaded a step, top-2,048 0.81 -> 0.73 ms
    (benchmarks/results/walk4-h200/); then the votes instead of a scan of shuffles, top-1,024 0.258 -> 0.238 ms
    (benchmarks/results/select-votes-h200/)."""
    from kernels_triton.indexer import ir as indexer_ir
    for topk, warps in ((512, 4), (2048, 8)):
        ttgir = indexer_ir.compile_ir("select", window=128, topk=topk)["ttgir"]
        layouts = dict(re.findall(r"^(#blocked\d*) = (#ttg\.blocked<.*>)$", ttgir, re.M))
        # the warp votes' slots (kernel.COMPACT_BY_VOTES_PTX) count on this layout: a segment a warp, 4
        # consecutive columns a lane, the lanes in column order
        seg = [name for name, lay in layouts.items() if "sizePerThread = [1, 4]" in lay and
               "threadsPerWarp = [1, 32]" in lay and f"warpsPerCTA = [{warps}, 1]" in lay and "order = [1, 0]" in lay]
        assert seg, layouts
        body = next(b for b in _loops(ttgir, "") if "step %c512_i32" in b.splitlines()[0])
        assert f"tensor<{warps}x128xf32, {seg[0]}>" in body
        assert "ttg.convert_layout" not in body and "tt.store" not in body
        assert body.count("elementwise_inline_asm") == 4          # four tiles a step, each compacted by votes
        assert body.count("vote.sync.ballot.b32") == 16 and body.count("st.global.b32") == 16
    # in SASS (ptxas for sm_90a): one 16-byte load a lane and tile (rows of whole 16-byte groups: VEC4), the
    # candidates compared as floats (no 64-bit key arithmetic), and counted by warp votes, not a scan of shuffles
    # (24 SHFL and 336 instructions a step at top-512 before; 264 with the votes, most of them skipped where no
    # lane of a tile keeps a column)
    from ptxas_report import assembled, sass_loops
    for gm in (False, True):
        # pass 2: 4 columns a lane and tile, each a predicated store, 4 tiles a step (the exact walk's last loop
        # stores 8 a step, so the one loop with 16 stores is pass 2)
        p2 = min((lp for lp in sass_loops(assembled(indexer_ir.compile_ir("select", group_maxima=gm)["ptx"])[1])
                  if lp.count("STG") == 16), key=len)
        assert p2.count("LDG") == 4 and p2.count("FSETP") == 16 and len(p2) <= 300, len(p2)
        assert p2.count("VOTE") == 20 and "SHFL" not in p2, p2
    # top-1,024 (CAP 2,048) on 4 warps and top-2,048 (CAP 4,096) on 8 segments and warps, still one segment a warp (no
    # barrier in pass 2), at the register caps that let 9 and 6 programs share an SM (kernel.SELECT_MAXNREG): nothing
    # spilled inside pass 2 or the bisections (the loops without loads: the exact walk's load the row); top-512 uncapped
    for topk, ratio, warps in ((1024, 4, 4), (2048, 1, 8)):
        cap = ki.SELECT_MAXNREG[warps]
        ptx = indexer_ir.compile_ir("select", topk=topk, ratio=ratio, group_maxima=True)["ptx"]
        assert f".maxnreg {cap}" in ptx and re.search(rf"\.reqntid {32 * warps}\b", ptx), (topk, "warps, capped")
        loops = sass_loops(assembled(ptx)[1])
        p2 = min((lp for lp in loops if lp.count("STG") == 16), key=len)
        assert p2.count("LDG") == 4 and "BAR" not in p2, p2
        assert not any("LDL" in lp or "STL" in lp for lp in loops if lp is p2 or "LDG" not in lp), topk
        assert ptxas_usage(ptx)[0] <= cap
    assert ".maxnreg" not in indexer_ir.compile_ir("select", topk=512, group_maxima=True)["ptx"]
