"""The attention's fused inverse RoPE (its epilogue) against the RoPE kernel as a pass of its own after it,
on the same inputs in the same process (issue: FP8 steps and speed, "fuse the inverse RoPE into the
epilogue"; HCA and window-only layers' targets):

    python benchmarks/gpu_fused_rope_check.py OUT_DIR

The pass of its own is the attention wrapper's fallback (sparse_mla.kernel.rope_fusable patched to say
no): the same program, the output rotated by kernels_triton's RoPE kernel after each chunk's attention,
as every program did before the fusion. Each variant's output must be bit-identical to the first's after
every run (the first is run twice, so nondeterminism shows too); variants are timed in alternation
(gpu_overlap_check.run_case: 3 rounds, medians). Writes OUT_DIR/fused-rope-check.json, prints a table."""
import os
import sys

from gpu_overlap_check import Patched, forward_case, run_all

from kernels_tilelang.sparse_mla import kernel as sparse_mla


def unfused(fwd):
    """A compiled forward whose attention leaves the inverse RoPE to the RoPE kernel after it."""
    return Patched(fwd, sparse_mla, "rope_fusable", lambda dim_v, rot_dim: False)


def case(name, preset, S, lengths=None):
    def build():
        name_, spec, S_, inputs, runs, out_b = forward_case(name, preset, S, [("fused", True, None)],
                                                             lengths=lengths)
        _, fwd, prog = runs[0]
        runs = [("RoPE pass after", unfused(fwd), prog), ("RoPE pass after, again", unfused(fwd), prog),
                ("fused in the epilogue", fwd, prog)]
        return name_, spec, S_, inputs, runs, out_b
    return build


if __name__ == "__main__":
    run_all([case("v4-flash 262144", "v4-flash", 262144),
             case("v4-flash-hca 262144", "v4-flash-hca", 262144),
             case("v4-window 262144", "v4-window", 262144),
             case("v4-flash packed 4x65536", "v4-flash", 262144, lengths=[65536] * 4),
             case("v4-flash 65536", "v4-flash", 65536),
             case("v4-pro 262144", "v4-pro", 262144)],
            os.path.join(sys.argv[1], "fused-rope-check.json"), kind="fused-rope-check")
