"""The FP8 score kernel alone and the forwards it sits in, with a hash of every output, so that the same script
run on two trees (PYTHONPATH at each, one process each, alternating) compares them bit for bit and in time:

    python benchmarks/gpu_score_check.py OUT_DIR TAG

Cases: `score_chunk_fp8` alone on a 2,048-query chunk of v4-flash at S = 262,144 (the last chunk, 65,536 keys
visible, and a middle one), and `score_chunk` (bf16 operands, v4-flash-bf16's kernel) on the last; then
v4-flash composed at 262,144, its standalone indexer, a packed batch of 4 x 65,536, one sequence of 65,536,
and v3.2 composed at 131,072 (gpu_select_check.timed: digests and medians). Writes OUT_DIR/score-check-TAG.json
and prints a table last."""
import sys

import torch
import triton

from gpu_select_check import FORWARDS, digest, run_records
from kernels_triton.indexer import kernel as indexer_kernel
from kernels_triton.quant import kernel as quant_kernel
from pipeline.lang.presets import preset


def score_alone(s_first: int, fp8: bool = True, S: int = 262144, n: int = 2048) -> dict:
    """One chunk's scores on packed operands as the composed program makes them (quant.pack_rows, FP4 steps)."""
    ix = preset("v4-flash").indexer
    ratio, T = 4, S // 4
    g = torch.Generator(device="cuda").manual_seed(s_first)
    q = torch.randn(n, ix.heads, ix.dim, device="cuda", generator=g).bfloat16()
    w = torch.randn(n, ix.heads, device="cuda", generator=g)
    k = torch.randn(T, ix.dim, device="cuda", generator=g).bfloat16()
    out = torch.full((n, (s_first + n) // ratio + 64), float("nan"), device="cuda")
    if fp8:
        q8, qs = torch.empty(q.shape, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty(q.shape[:2], device="cuda")
        k8, ks = torch.empty(k.shape, dtype=torch.float8_e4m3fn, device="cuda"), torch.empty(T, device="cuda")
        quant_kernel.pack_rows(q, q8, qs, fmt="e2m1", block=32)
        quant_kernel.pack_rows(k, k8, ks, fmt="e2m1", block=32)

        def run():
            indexer_kernel.score_chunk_fp8(q8, qs, w, k8, ks, out, s_first=s_first, ratio=ratio)
    else:
        def run():
            indexer_kernel.score_chunk(q, w, k, out, s_first=s_first, ratio=ratio)
    run()
    flop = 2 * ix.heads * ix.dim * sum((s_first + i + 1) // ratio for i in range(n))
    ms = triton.testing.do_bench(run, warmup=20, rep=300, return_mode="median")
    return {"case": f"score {'fp8' if fp8 else 'bf16'} alone, {n} queries from {s_first}", "digest": digest(out),
            "median_ms": ms, "tflops": flop / ms / 1e9}


def main():
    out_dir, tag = sys.argv[1], sys.argv[2]
    run_records([lambda: score_alone(262144 - 2048), lambda: score_alone(131072 - 2048),
                 lambda: score_alone(262144 - 2048, fp8=False)] + FORWARDS, "score-check", out_dir, tag)


if __name__ == "__main__":
    main()
