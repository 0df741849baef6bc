"""GPU probe: ping-pong score walk against the Gluon walk (bits) and timings."""
import json, os, sys, time
import torch, triton
sys.path.insert(0, os.path.dirname(__file__))
from pingpong import score_chunk_fp8_pp
from gpu_score_check import chunk_operands, pack
from kernels_triton.indexer import kernel as K

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
res = {"commit": os.environ.get("CSA_COMMIT"), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
       "triton": triton.__version__, "checks": [], "times": []}

def bits(x):
    return x.view(torch.int32)

VARIANTS = {
    "gluon": lambda a, o, sf: K.score_chunk_fp8(*a, o, s_first=sf, ratio=4),
    "triton": lambda a, o, sf: K.score_chunk_fp8(*a, o, s_first=sf, ratio=4, walk="triton"),
    "pp3": lambda a, o, sf: score_chunk_fp8_pp(*a, o, s_first=sf, ratio=4, stages=3),
    "pp4": lambda a, o, sf: score_chunk_fp8_pp(*a, o, s_first=sf, ratio=4, stages=4),
    "pp2": lambda a, o, sf: score_chunk_fp8_pp(*a, o, s_first=sf, ratio=4, stages=2),
    "pp3-noorder": lambda a, o, sf: score_chunk_fp8_pp(*a, o, s_first=sf, ratio=4, stages=3, order=False),
}

# correctness: several shapes, NaN-poisoned outputs, a NaN key row and a NaN query
for (n, s_first, T) in [(2048, 262144 - 2048, 65536), (2045, 7, 600), (37, 5000, 1300), (2048, 129024, 65536), (9, 0, 64)]:
    q, w, k = chunk_operands(n, T, 1234 + n)
    if n > 8:
        k[5] = float("nan"); q[3, 7, 2] = float("nan")
    (q8, qs), (k8, ks) = pack(q), pack(k)
    a = (q8, qs, w, k8, ks)
    ld = (s_first + n) // 4 + 64
    outs = {}
    for name in ["gluon", "triton", "pp3", "pp4", "pp2", "pp3-noorder"]:
        o = torch.full((n, ld), float("nan"), device="cuda")
        VARIANTS[name](a, o, s_first)
        torch.cuda.synchronize()
        outs[name] = o
    for name in outs:
        eq = bool(torch.equal(bits(outs[name]), bits(outs["gluon"])))
        res["checks"].append({"n": n, "s_first": s_first, "T": T, "variant": name, "bit_equal_gluon": eq})
        print("check", n, s_first, T, name, eq, flush=True)

# timing: last chunk and a middle chunk, variants alternating, 3 rounds
for s_first in (262144 - 2048, 129024):
    n, T = 2048, 65536
    q, w, k = chunk_operands(n, T, s_first)
    (q8, qs), (k8, ks) = pack(q), pack(k)
    a = (q8, qs, w, k8, ks)
    o = torch.full((n, (s_first + n) // 4 + 64), float("nan"), device="cuda")
    flop = 2 * 64 * 128 * sum((s_first + i + 1) // 4 for i in range(n))
    for rnd in range(3):
        for name in ["gluon", "pp3", "pp4", "pp2", "pp3-noorder"]:
            ms = triton.testing.do_bench(lambda: VARIANTS[name](a, o, s_first), warmup=20, rep=200, return_mode="median")
            res["times"].append({"s_first": s_first, "variant": name, "round": rnd, "ms": ms, "tflops": flop / ms / 1e9})
            print("time", s_first, name, rnd, round(ms, 4), round(flop / ms / 1e9), flush=True)
json.dump(res, open(os.path.join(out_dir, "pp-probe.json"), "w"), indent=1)
