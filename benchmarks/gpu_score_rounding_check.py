"""The official code's bf16 index score (`Indexer.score_rounding = "bf16"`) against csa-dsl's fp32 score, on one GPU,
same inputs, same process:

    python benchmarks/gpu_score_rounding_check.py OUT_DIR TAG

1. How close each mode's selection is to the official ranking: v4-flash's sizes and steps at S = 65,536, four blocks
   of 512 queries; the official scores are the formula of the official code run by torch in bf16
   (tests/test_score_rounding.official_scores) on the quantised operands. Per mode: the strict tie-aware recall
   (a pick counts when its official score is >= the official K-th), the share of queries whose whole list passes
   (their key set is the official one up to the order of ties), and the share of queries whose list equals the
   other mode's.
2. The cost: the score of the last 2,048-query chunk at 262,144 (the Gluon walk with and without the selection's
   group maxima, the Triton walk; each with the fp32 and the bf16 score) and the selection on each one's scores;
   the v4-flash indexer and composed forward at 262,144 in both modes (median ms, peak GiB above inputs and
   output).
Writes OUT_DIR/score-rounding-TAG.json and prints a table last."""
import dataclasses
import os
import sys

import torch
import triton

import csa_dsl
from csa_dsl.benchmarks import indexer_inputs, peak_above, time_ms
from gpu_select_check import run_records
from kernels_triton.indexer import cost as icost
from kernels_triton.indexer import kernel as ikernel
from kernels_triton.indexer import naive as inaive
from kernels_triton.quant import kernel as qkernel
from kernels_triton.quant.naive import quant_dequant
from pipeline import planner
from pipeline.metrics import tie_aware_recall

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_score_rounding import official_scores  # noqa: E402  (the tests' statement of the official formula)

MODES = ("fp32", "bf16")


def with_rounding(spec, mode):
    return spec.replace(indexer=dataclasses.replace(spec.indexer, score_rounding=mode))


def agreement(S: int = 65536) -> dict:
    spec = csa_dsl.preset("v4-flash")
    ix, m = spec.indexer, spec.ratio
    q, w, k = indexer_inputs(spec, 1, S, seed=S).values()
    ids = {mode: csa_dsl.indexer_topk(q, w, k, ix.topk, m, quant=ix.quant, score_rounding=mode) for mode in MODES}
    qd, kd = (quant_dequant(x, ix.quant.format, ix.quant.block) for x in (q, k))
    stats = {mode: {"hits": 0, "picks": 0, "whole": 0} for mode in MODES}
    queries = same = 0
    for s0 in (S // 4, S // 2, 3 * S // 4, S - 512):
        s1 = s0 + 512
        off = inaive.mask_invisible(official_scores(qd[:, s0:s1], w[:, s0:s1], kd)[0],
                                    torch.arange(s0, s1, device="cuda"), m)
        for mode in MODES:
            for r in range(512):
                rec, det = tie_aware_recall(ids[mode][0, s0 + r:s0 + r + 1], off[r:r + 1], ix.topk, rel_tol=0.0)
                stats[mode]["hits"] += rec * ix.topk
                stats[mode]["picks"] += ix.topk
                stats[mode]["whole"] += rec == 1.0
        a, b = (ids[mode][0, s0:s1].sort(-1).values for mode in MODES)
        same += int((a == b).all(-1).sum())
        queries += 512
    return {"case": f"agreement with the official ranking, v4-flash {S}", "queries": queries,
            **{f"{mode}_strict_recall": stats[mode]["hits"] / stats[mode]["picks"] for mode in MODES},
            **{f"{mode}_queries_official_set": stats[mode]["whole"] / queries for mode in MODES},
            "queries_same_list_both_modes": same / queries}


def last_chunk(S: int = 262144, n: int = 2048) -> list:
    """The score of the last chunk three ways and the selection on each one's scores."""
    spec = csa_dsl.preset("v4-flash")
    ix, m = spec.indexer, spec.ratio
    T, s0 = S // m, S - n
    g = torch.Generator(device="cuda").manual_seed(n)
    q = torch.randn(n, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(n, ix.heads, device="cuda", generator=g) * (ix.heads * ix.dim) ** -0.5
    k = torch.randn(T, ix.dim, device="cuda", generator=g).bfloat16()
    q8, qs = torch.empty(q.shape, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty(n, ix.heads, device="cuda")
    k8, ks = torch.empty(k.shape, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty(T, device="cuda")
    qkernel.pack_rows(q, q8, qs, fmt="e2m1", block=32)
    qkernel.pack_rows(k, k8, ks, fmt="e2m1", block=32)
    out = torch.empty(n, icost.score_ld(T), device="cuda")
    ids = torch.empty(n, ix.topk, dtype=torch.int32, device="cuda")
    recs = []
    gm = torch.empty(n, icost.select_capacity(ix.topk), device="cuda")
    for label, kw in (("gluon walk + maxima, fp32 score", {"gmax": gm}),
                      ("gluon walk + maxima, bf16 score", {"gmax": gm, "round_bf16": True}),
                      ("gluon walk, fp32 score", {}), ("gluon walk, bf16 score", {"round_bf16": True}),
                      ("triton walk, fp32 score", {"walk": "triton"}),
                      ("triton walk, bf16 score", {"walk": "triton", "round_bf16": True})):
        def score():
            ikernel.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s0, ratio=m, **kw)

        def select():
            ikernel.select_chunk(out, ids, s_first=s0, ratio=m, k_eff=ix.topk, topk=ix.topk, gmax=kw.get("gmax"))
        score()
        ms = triton.testing.do_bench(score, warmup=20, rep=200, return_mode="median")
        sel = triton.testing.do_bench(select, warmup=20, rep=200, return_mode="median")
        recs.append({"case": f"last chunk at {S}: {label}", "median_ms": ms, "select_ms": sel})
    return recs


def indexer_records(spec, S: int) -> list:
    q, w, k = indexer_inputs(spec, 1, S, seed=S).values()
    ix = spec.indexer
    recs = []
    for mode in MODES:
        fn = lambda: csa_dsl.indexer_topk(q, w, k, ix.topk, spec.ratio, quant=ix.quant, score_rounding=mode)  # noqa
        recs.append({"case": f"indexer {spec.name} {S}, {mode} score", "peak_gib": peak_above(fn),
                     "median_ms": time_ms(fn)})
    return recs


def forwards(S: int = 262144) -> list:
    base = csa_dsl.preset("v4-flash")
    recs = indexer_records(base, S)
    inputs = csa_dsl.random_inputs(base, 1, S, "cuda", seed=0)
    out_bytes = planner.output_bytes(base, 1, S)
    for mode in MODES:
        spec = with_rounding(base, mode)
        fwd = csa_dsl.compile(spec, "cuda")
        plan = fwd.plan(S)
        fn = lambda: fwd(**inputs)  # noqa: E731
        recs.append({"case": f"composed v4-flash {S}, {mode} score", "peak_gib": peak_above(fn, out_bytes),
                     "plan_gib": plan.peak_bytes / 2**30, "median_ms": time_ms(fn)})
        torch.cuda.empty_cache()
    return recs


def main():
    run_records([agreement, last_chunk, forwards], "score-rounding", sys.argv[1], sys.argv[2],
                show=("select_ms", "peak_gib", "plan_gib", "queries_same_list_both_modes")
                + tuple(f"{mode}_{stat}" for mode in MODES for stat in ("strict_recall", "queries_official_set")))


if __name__ == "__main__":
    main()
