"""The Gluon score walk on bf16 operands (the bf16 presets' raw index operands, V3.2's e4m3 values multiplied
exactly) against the Triton walk, on one GPU, same inputs, same process:

    python benchmarks/gpu_bf16_walk_check.py OUT_DIR TAG

1. Bits: the last 2,048 queries of v4-flash-bf16 at 65,536 and of v3.2 at 32,768, into NaN-poisoned buffers, the
   Gluon walk (with and without the selection's group maxima, and rounding to bf16) against _score_kernel: the
   same cells written, the same bits.
2. Time of the last chunk alone: v4-flash-bf16 at 262,144 and v3.2 at 131,072, each walk shape (4 x 2 and 2 x 4,
   with the maxima where the shape takes them) and the Triton walk; v3.2's FP8 operands (Indexer.fp8_mma) too.
3. The forwards: v4-flash-bf16 composed and its indexer at 262,144, v3.2 composed at 131,072 (default and
   fp8_mma), v4-flash composed at 262,144.
Writes OUT_DIR/bf16-walk-TAG.json and prints a table last."""
import dataclasses
import sys

import torch
import triton

import csa_dsl
from csa_dsl.benchmarks import indexer_inputs, peak_above, time_ms
from gpu_select_check import run_records
from kernels_triton.indexer import cost as icost
from kernels_triton.indexer import kernel as ikernel
from kernels_triton.indexer import score_gluon
from kernels_triton.quant import kernel as qkernel
from pipeline import planner


def operands(spec, S, n, fp8=False, seed=0):
    """The last n queries' operands as the composed program passes them: raw bf16 (no quant), or packed (V3.2)."""
    ix, T = spec.indexer, S // spec.ratio
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(n, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(n, ix.heads, device="cuda", generator=g) * (ix.heads * ix.dim) ** -0.5
    k = torch.randn(T, ix.dim, device="cuda", generator=g).bfloat16()
    if ix.quant is None:
        return dict(q=q, w=w, k=k), False
    fmt, blk = ix.quant.format, ix.quant.block
    k8 = torch.empty(T, ix.dim, dtype=qkernel.packed_dtype(fmt, fp8), device="cuda")
    ks = torch.empty(T, device="cuda")
    qkernel.pack_rows(k, k8, ks, fmt=fmt, block=blk)
    q8, qs = torch.empty(q.shape, dtype=k8.dtype, device="cuda"), torch.empty(n, ix.heads, device="cuda")
    qkernel.pack_rows(q, q8, qs, fmt=fmt, block=blk)
    return dict(q8=q8, q_scale=qs, w=w, k8=k8, k_scale=ks), True


def score(args, packed, out, s_first, ratio, **kw):
    if packed:
        ikernel.score_chunk_fp8(**args, out=out, s_first=s_first, ratio=ratio, **kw)
    else:
        ikernel.score_chunk(**args, out=out, s_first=s_first, ratio=ratio, **kw)


def gluon(args, packed, out, s_first, ratio, walk, gmax=None, round_bf16=False):
    q, k = (args["q8"], args["k8"]) if packed else (args["q"], args["k"])
    score_gluon.score_chunk_gluon(q, args.get("q_scale"), args["w"], k, args.get("k_scale"), out, s_first=s_first,
                                  ratio=ratio, store_queries=ikernel.score_block_queries(q.shape[1]), gmax=gmax,
                                  walk=walk, round_bf16=round_bf16)


def bits():
    recs = []
    for name, S in (("v4-flash-bf16", 65536), ("v3.2", 32768)):
        spec = csa_dsl.preset(name)
        n, m, topk = 2048, spec.ratio, spec.indexer.topk
        args, packed = operands(spec, S, n, seed=S)
        ld = icost.score_ld(S // m)
        for rb in (False, True):
            ref = torch.full((n, ld), float("nan"), device="cuda")
            score(args, packed, ref, S - n, m, walk="triton", round_bf16=rb)
            for label, walk, gm in (("2x4", score_gluon.WALK_2X4, False), ("4x2 + maxima", score_gluon.WALK_4X2, True),
                                    ("2x4 + maxima", score_gluon.WALK_2X4, True)):
                out = torch.full((n, ld), float("nan"), device="cuda")
                gmax = torch.empty(n, icost.select_capacity(topk), device="cuda") if gm else None
                gluon(args, packed, out, S - n, m, walk, gmax, rb)
                same = (torch.equal(out.isnan(), ref.isnan())
                        and torch.equal(out[~out.isnan()].view(torch.int32), ref[~ref.isnan()].view(torch.int32)))
                recs.append({"case": f"bits {name} {S} gluon {label}{' bf16-rounded' if rb else ''} vs triton",
                             "same_bits": same})
    return recs


def timing():
    recs = []
    for name, S, fp8 in (("v4-flash-bf16", 262144, False), ("v3.2", 131072, False), ("v3.2", 131072, True)):
        spec = csa_dsl.preset(name)
        n, m, topk = 2048, spec.ratio, spec.indexer.topk
        args, packed = operands(spec, S, n, fp8=fp8, seed=n)
        out = torch.empty(n, icost.score_ld(S // m), device="cuda")
        gmax = torch.empty(n, icost.select_capacity(topk), device="cuda")
        cases = [("gluon 2x4", lambda: gluon(args, packed, out, S - n, m, score_gluon.WALK_2X4)),
                 ("gluon 2x4 + maxima", lambda: gluon(args, packed, out, S - n, m, score_gluon.WALK_2X4, gmax)),
                 ("gluon 4x2 + maxima", lambda: gluon(args, packed, out, S - n, m, score_gluon.WALK_4X2, gmax))]
        if not fp8:
            cases.append(("triton", lambda: score(args, packed, out, S - n, m, walk="triton")))
        for label, fn in cases:
            fn()
            recs.append({"case": f"last chunk {name}{' fp8_mma' if fp8 else ''} {S}: {label}",
                         "median_ms": triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")})
    return recs


def indexer_record(spec, S: int) -> dict:
    q, w, k = indexer_inputs(spec, 1, S, seed=S).values()
    fn = lambda: csa_dsl.indexer_topk(q, w, k, spec.indexer.topk, spec.ratio)  # noqa: E731
    return {"case": f"indexer {spec.name} {S}", "median_ms": time_ms(fn), "peak_gib": peak_above(fn)}


def forward_record(name: str, spec, S: int) -> dict:
    torch.cuda.empty_cache()
    inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=0)
    fwd = csa_dsl.compile(spec, "cuda")
    fn = lambda: fwd(**inp)  # noqa: E731
    return {"case": f"composed {name} {S}", "median_ms": time_ms(fn),
            "peak_gib": peak_above(fn, planner.output_bytes(spec, 1, S)), "plan_gib": fwd.plan(S).peak_bytes / 2**30}


def forwards():
    spec = csa_dsl.preset("v4-flash-bf16")
    v32 = csa_dsl.preset("v3.2")
    return [indexer_record(spec, 262144)] + [
        forward_record(name, sp, S)
        for name, sp, S in (("v4-flash-bf16", spec, 262144), ("v4-flash", csa_dsl.preset("v4-flash"), 262144),
                            ("v3.2", v32, 131072),
                            ("v3.2 fp8_mma", v32.replace(indexer=dataclasses.replace(v32.indexer, fp8_mma=True)),
                             131072))]


def main():
    run_records([bits, timing, forwards], "bf16-walk", sys.argv[1], sys.argv[2], preset_name="v4-flash-bf16",
                show=("same_bits", "peak_gib"))


if __name__ == "__main__":
    main()
