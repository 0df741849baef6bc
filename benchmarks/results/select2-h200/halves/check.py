"""Where the halves walk's scores differ from the N=256 walk's (pairwise, with and without gmax)."""
import functools, os, sys
import torch
from gpu_score_check import chunk_operands, pack
from kernels_triton.indexer import kernel as K
from kernels_triton.indexer import score_gluon as SG
from kernels_triton.indexer.cost import select_capacity
orig = SG.score_chunk_fp8_gluon
V = {"n256": functools.partial(orig, halves=False), "halves": functools.partial(orig, halves=True)}
bits = lambda x: x.view(torch.int32)
for (n, s_first, T, topk, poison) in [(2048, 262144 - 2048, 65536, 512, True), (2048, 262144 - 2048, 65536, 512, False),
                                      (100, 3000, 800, 512, True), (100, 3000, 800, 512, False), (37, 50000, 13000, 1024, False)]:
    cap = select_capacity(topk)
    q, w, k = chunk_operands(n, T, 77 + n + topk)
    if poison:
        k[5] = float("nan"); q[3, 7, 2] = float("nan")
    (q8, qs), (k8, ks) = pack(q), pack(k)
    ld = (s_first + n) // 4 + 64
    outs = {}
    for v in V:
        for gmx in (False, True):
            o = torch.full((n, ld), float("nan"), device="cuda")
            gm = torch.full((n, cap), float("nan"), device="cuda") if gmx else None
            K.score_chunk_fp8_gluon = V[v]
            K.score_chunk_fp8(q8, qs, w, k8, ks, o, s_first=s_first, ratio=4, gmax=gm)
            torch.cuda.synchronize()
            outs[(v, gmx)] = (o, gm)
    ref = outs[("n256", False)][0]
    vis = torch.arange(ld, device="cuda")[None, :] < ((s_first + torch.arange(n, device="cuda") + 1) // 4)[:, None]
    for key, (o, gm) in outs.items():
        d = bits(o) != bits(ref)
        dv = d & vis
        msg = f"{n},{s_first},{T},poison={poison} {key}: differ {int(d.sum())} (visible {int(dv.sum())})"
        if d.any():
            r, c = d.nonzero()[0].tolist()
            msg += f" first at row {r} col {c}: {o[r, c].item()} vs {ref[r, c].item()} (L={(s_first + r + 1) // 4})"
            rows = d.any(1).nonzero().flatten()
            msg += f" rows {rows[:8].tolist()}..{rows[-3:].tolist()} cols {d.any(0).nonzero().flatten()[:5].tolist()}"
        if gm is not None and key[0] == "halves":
            g0 = outs[("n256", True)][1]
            msg += f" gmax differ {int((bits(gm) != bits(g0)).sum())}"
        print(msg, flush=True)
