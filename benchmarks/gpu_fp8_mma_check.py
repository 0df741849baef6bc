"""V3.2 with its e4m3 index operands on FP8 tensor cores (`Indexer.fp8_mma`) against the default (multiplied as
bf16, exact), on one GPU, same inputs, same process:

    python benchmarks/gpu_fp8_mma_check.py OUT_DIR TAG [S]

v3.2 composed at S (default 131,072): median ms and peak GiB above inputs and output (the default, then fp8_mma,
then the default again); the share of queries whose key list is the same in both; each mode's strict tie-aware
recall against the exact scores of the quantised operands (float64) on two blocks of 256 queries, and the largest
score error of the FP8 MMAs there, relative to its row's largest score. Writes OUT_DIR/fp8-mma-TAG.json and prints
a table last."""
import dataclasses
import json
import os
import sys

import torch

import csa_dsl
from csa_dsl.benchmarks import base_record, peak_above, time_ms
from kernels_triton.indexer import cost as icost
from kernels_triton.indexer import kernel as ikernel
from kernels_triton.indexer import naive as ix_ref
from kernels_triton.quant import kernel as qkernel
from kernels_triton.quant.naive import quant_dequant
from pipeline import planner
from pipeline.metrics import tie_aware_recall


def main():
    out_dir, tag = sys.argv[1], sys.argv[2]
    S = int(sys.argv[3]) if len(sys.argv) > 3 else 131072
    base = csa_dsl.preset("v3.2")
    specs = {False: base, True: base.replace(indexer=dataclasses.replace(base.indexer, fp8_mma=True))}
    inp = csa_dsl.random_inputs(base, 1, S, "cuda", seed=S)
    out_bytes = planner.output_bytes(base, 1, S)
    recs, ids = [], {}
    for fp8 in (False, True, False):
        fwd = csa_dsl.compile(specs[fp8], "cuda")
        prog = fwd.plan(S)
        _, ids[fp8] = fwd(**inp, return_indices=True)
        fn = lambda: fwd(**inp)  # noqa: E731
        recs.append(dict(base_record("fp8-mma", specs[fp8], 1, S, "composed"), tree=tag,
                         case=f"v3.2 composed {S}, " + ("fp8_mma" if fp8 else "default (bf16 MMA)"),
                         median_ms=time_ms(fn), peak_gib=peak_above(fn, out_bytes), plan_gib=prog.peak_bytes / 2**30))
        torch.cuda.empty_cache()
    a, b = (ids[m].sort(-1).values for m in (False, True))
    iq, ix = base.indexer.quant, base.indexer
    qd, kd = quant_dequant(inp["idx_q"], iq.format, iq.block), quant_dequant(inp["idx_k"], iq.format, iq.block)
    recall, worst = {False: [], True: []}, 0.0
    for s0 in (S // 2, S - 256):
        s1 = s0 + 256
        exact = (torch.einsum("bshd,btd->bsht", qd[:, s0:s1].double(), kd.double()).relu()
                 * inp["idx_w"][:, s0:s1].double()[..., None]).sum(2)[0]
        exact = ix_ref.mask_invisible(exact, torch.arange(s0, s1, device="cuda"), base.ratio)
        for m in (False, True):
            recall[m].append(tie_aware_recall(ids[m][0, s0:s1], exact.float(), ix.topk, rel_tol=0.0)[0])
        # the FP8 MMAs' score error, on the same operands packed as fp8_mma packs them
        n, T = s1 - s0, s1
        k8 = torch.empty(T, ix.dim, dtype=qkernel.packed_dtype(iq.format, True), device="cuda")
        ks = torch.empty(T, device="cuda")
        qkernel.pack_rows(inp["idx_k"][0, :T], k8, ks, fmt=iq.format, block=iq.block)
        q8 = torch.empty(n, ix.heads, ix.dim, dtype=k8.dtype, device="cuda")
        qs = torch.empty(n, ix.heads, device="cuda")
        qkernel.pack_rows(inp["idx_q"][0, s0:s1], q8, qs, fmt=iq.format, block=iq.block)
        got = torch.full((n, icost.score_ld(T)), float("nan"), device="cuda")
        ikernel.score_chunk_fp8(q8, qs, inp["idx_w"][0, s0:s1], k8, ks, got, s_first=s0, ratio=base.ratio)
        vis = torch.isfinite(exact[:, :T])
        row_max = torch.where(vis, exact[:, :T].abs(), 0).amax(1, keepdim=True)
        worst = max(worst, ((got[:, :T].double() - exact[:, :T]).abs() / row_max)[vis].max().item())
    recs.append(dict(base_record("fp8-mma", base, 1, S, "composed"), tree=tag, case="agreement",
                     queries_same_list=float((a == b).all(-1).float().mean()),
                     strict_recall_default=recall[False], strict_recall_fp8_mma=recall[True],
                     fp8_mma_worst_score_error_of_row_max=worst))
    json.dump(recs, open(os.path.join(out_dir, f"fp8-mma-{tag}.json"), "w"), indent=1)
    for r in recs[:-1]:
        print(f"{r['case']:<44} {r['median_ms']:9.2f} ms  {r['peak_gib']:.3f} GiB (plan {r['plan_gib']:.3f})")
    r = recs[-1]
    print(f"same lists {r['queries_same_list']:.4f}; strict recall default {r['strict_recall_default']}, fp8_mma "
          f"{r['strict_recall_fp8_mma']}; worst FP8-MMA score error {r['fp8_mma_worst_score_error_of_row_max']:.3g} "
          f"of the row's largest")


if __name__ == "__main__":
    main()
