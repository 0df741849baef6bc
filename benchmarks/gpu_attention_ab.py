"""The sparse MLA attention alone and the forwards it sits in, with a hash of every output, so that the same
script run on two trees (PYTHONPATH at each, one process each, alternating) compares them in time (and bit for
bit where they should agree):

    python benchmarks/gpu_attention_ab.py OUT_DIR TAG

Cases: the default attention kernel alone on 65,536 queries of `csa-dsl bench attention`'s inputs (v4-flash's
and v4-pro's shapes: a window of consecutive rows and random compressed rows), and on the same lists drawn from
2,048 rows only (the gathers from L2: what the kernel's own schedule costs); then v4-flash composed at 262,144,
v4-flash-hca at 262,144 and v4-pro at 262,144 (gpu_select_check.timed). Writes OUT_DIR/attention-ab-TAG.json
and prints a table last."""
import sys

import torch

from csa_dsl.benchmarks import attention_inputs, time_ms
from gpu_overlap_check import forward_case
from gpu_select_check import DEFAULT, digest, run_records, timed
from kernels_tilelang.sparse_mla import kernel as sparse_mla
from kernels_tilelang.sparse_mla.cost import attention_flop
from pipeline.lang.presets import preset


def attention_launch(spec_name: str, n: int = 65536, rows_from: int = 0) -> tuple:
    """(run, keys): the default attention kernel on bench attention's inputs (seed 0), n queries; rows_from > 0
    folds every key id into [0, rows_from). Also benchmarks/ncu_one_launch.py's."""
    spec = preset(spec_name)
    a = spec.attention
    q, kv, keys = attention_inputs(spec, n, n + n // spec.ratio, seed=0)
    if rows_from:
        keys = keys % rows_from
    sink = (torch.randn(a.heads, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
            if a.sink else None)
    out = torch.empty(1, n, a.heads, a.v_dim, device="cuda", dtype=torch.bfloat16)

    def run():
        return sparse_mla.sparse_mla_fwd(q, kv, keys, a.softmax_scale, a.v_dim, sink=sink, out=out)
    return run, keys


def attention_alone(spec_name: str, n: int = 65536, rows_from: int = 0) -> dict:
    """The attention on bench attention's inputs (seed 0); rows_from > 0 folds every key id into [0, rows_from)."""
    a = preset(spec_name).attention
    run, keys = attention_launch(spec_name, n, rows_from)
    ms = time_ms(run)
    valid = int((keys >= 0).sum())
    return {"case": f"attention {spec_name} {n}" + (f" rows<{rows_from}" if rows_from else ""),
            "digest": digest(run()), "median_ms": ms,
            "tflops": attention_flop(a.heads, a.qk_dim, a.v_dim, valid) / ms / 1e9}


def main():
    out_dir, tag = sys.argv[1], sys.argv[2]
    run_records([lambda: attention_alone("v4-flash"), lambda: attention_alone("v4-pro"),
                 lambda: attention_alone("v4-flash", rows_from=2048), lambda: attention_alone("v4-pro", rows_from=2048),
                 lambda: timed(forward_case("v4-flash 262144", "v4-flash", 262144, DEFAULT)),
                 lambda: timed(forward_case("v4-flash-hca 262144", "v4-flash-hca", 262144, DEFAULT)),
                 lambda: timed(forward_case("v4-pro 262144", "v4-pro", 262144, DEFAULT))],
                "attention-ab", out_dir, tag)


if __name__ == "__main__":
    main()
