"""The FP8 score kernel alone and the forwards it sits in, with a hash of every output, so that the same script
run on two trees (PYTHONPATH at each, one process each, alternating) compares them bit for bit and in time:

    python benchmarks/gpu_score_check.py OUT_DIR TAG

Cases: `score_chunk_fp8` alone on a 2,048-query chunk of v4-flash at S = 262,144 (the last chunk, 65,536 keys
visible, and a middle one), and `score_chunk` (bf16 operands, v4-flash-bf16's kernel) on the last; the last
chunk of one sequence of 65,536, alone and packed as the last of 4 x 65,536 (the packed walk's cost); then
v4-flash composed at 262,144, its standalone indexer, a packed batch of 4 x 65,536, one sequence of 65,536,
and v3.2 composed at 131,072 (gpu_select_check.timed: digests and medians). Writes OUT_DIR/score-check-TAG.json
and prints a table last."""
import sys

import torch
import triton

from gpu_select_check import FORWARDS, digest, run_records
from kernels_triton.indexer import kernel as indexer_kernel
from kernels_triton.quant import kernel as quant_kernel
from kernels_triton.varlen import kernel as varlen_kernel
from pipeline.lang.presets import preset


def chunk_operands(n: int, T: int, seed: int) -> tuple:
    """Random bf16 index queries [n, heads, dim], fp32 head weights and bf16 keys [T, dim] of v4-flash."""
    ix = preset("v4-flash").indexer
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(n, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(n, ix.heads, device="cuda", generator=g)
    return q, w, torch.randn(T, ix.dim, device="cuda", generator=g).bfloat16()


def pack(x: torch.Tensor) -> tuple:
    """x packed as the composed program packs it (quant.pack_rows, FP4 steps): FP8 values, one scale a row."""
    x8 = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device="cuda")
    scale = torch.empty(x.shape[:-1], device="cuda")
    quant_kernel.pack_rows(x, x8, scale, fmt="e2m1", block=32)
    return x8, scale


def score_launch(s_first: int, fp8: bool = True, S: int = 262144, n: int = 2048) -> tuple:
    """(run, out): one chunk's score launch on v4-flash operands (packed as the composed program packs them,
    quant.pack_rows with FP4 steps, when fp8), into a NaN-poisoned out. Also benchmarks/ncu_one_launch.py's."""
    ratio, T = 4, S // 4
    q, w, k = chunk_operands(n, T, s_first)
    out = torch.full((n, (s_first + n) // ratio + 64), float("nan"), device="cuda")
    if fp8:
        (q8, qs), (k8, ks) = pack(q), pack(k)

        def run():
            indexer_kernel.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio)
    else:
        def run():
            indexer_kernel.score_chunk(q, w, k, out, s_first=s_first, ratio=ratio)
    return run, out


def score_alone(s_first: int, fp8: bool = True, S: int = 262144, n: int = 2048) -> dict:
    """One chunk's scores on packed operands as the composed program makes them (quant.pack_rows, FP4 steps)."""
    ix = preset("v4-flash").indexer
    ratio = 4
    run, out = score_launch(s_first, fp8, S, n)
    run()
    flop = 2 * ix.heads * ix.dim * sum((s_first + i + 1) // ratio for i in range(n))
    ms = triton.testing.do_bench(run, warmup=20, rep=300, return_mode="median")
    return {"case": f"score {'fp8' if fp8 else 'bf16'} alone, {n} queries from {s_first}", "digest": digest(out),
            "median_ms": ms, "tflops": flop / ms / 1e9}


def score_alone_packed(packed: bool, S: int = 65536, seqs: int = 4, n: int = 2048) -> dict:
    """The last 2,048-query chunk of one sequence of S, alone (packed False) or as the last chunk of a packed
    batch of `seqs` sequences of S (the same keys in each): the packed walk against the unpacked one on the
    same work. The digest is of the visible scores (a packed row holds its visible columns only)."""
    ratio, T = 4, S // 4
    q, w, k = chunk_operands(n, T, S)
    (q8, qs), (k8, ks) = pack(q), pack(k)
    seg, s_first = None, S - n
    if packed:
        k8, ks = k8.repeat(seqs, 1), ks.repeat(seqs)
        cu = torch.arange(0, seqs * S + 1, S, device="cuda", dtype=torch.int32)
        seg = torch.empty(seqs * S, varlen_kernel.SEG_COLS, device="cuda", dtype=torch.int32)
        varlen_kernel.segments(cu, seg, ratio=ratio)
        seg, s_first = seg[-n:], 0
    out = torch.full((n, T + 64), float("nan"), device="cuda")

    def run():
        indexer_kernel.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio, seg=seg)
    run()
    rows = torch.arange(S - n, S, device="cuda") + 1
    visible = torch.where(torch.arange(out.shape[1], device="cuda")[None, :] < (rows // ratio)[:, None], out, 0.0)
    ms = triton.testing.do_bench(run, warmup=20, rep=300, return_mode="median")
    return {"case": f"score fp8 alone, last {n} queries of {S}" + (f", packed {seqs} x {S}" if packed else ""),
            "digest": digest(visible), "median_ms": ms}


def main():
    out_dir, tag = sys.argv[1], sys.argv[2]
    run_records([lambda: score_alone(262144 - 2048), lambda: score_alone(131072 - 2048),
                 lambda: score_alone(262144 - 2048, fp8=False), lambda: score_alone_packed(False),
                 lambda: score_alone_packed(True)] + FORWARDS, "score-check", out_dir, tag)


if __name__ == "__main__":
    main()
