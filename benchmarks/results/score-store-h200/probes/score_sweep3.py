"""Score-kernel structure probes: MMA-only (EPI 2), no ReLU/weight (EPI 0), weights reloaded per tile under a
168-register cap (3 programs an SM), TMA key loads. OUT_DIR argv[1]."""
import json, os, sys
import torch, triton
sys.path.insert(0, os.path.dirname(__file__))
import score_exp
from kernels_triton.indexer import kernel as K
from kernels_triton.varlen.kernel import segments_arg
from triton.tools.tensor_descriptor import TensorDescriptor

out_dir = sys.argv[1]
recs = []
S, n, HI, DI, R = 262144, 2048, 64, 128, 4
T = S // R
g = torch.Generator(device="cuda").manual_seed(7)
q8 = (torch.randn(n, HI, DI, device="cuda", generator=g) * 2).to(torch.float8_e4m3fn)
qs = torch.full((n, HI), 0.5, device="cuda")
w = torch.randn(n, HI, device="cuda", generator=g)
k8 = (torch.randn(T, DI, device="cuda", generator=g) * 2).to(torch.float8_e4m3fn)
ks = torch.full((T,), 0.25, device="cuda")
kdesc = TensorDescriptor.from_tensor(k8, block_shape=[64, DI])
s_first = S - n
ld = (s_first + n) // R + 64
ref = torch.full((n, ld), float("nan"), device="cuda")
K.score_chunk_fp8(q8, qs, w, k8, ks, ref, s_first=s_first, ratio=R)
flop = 0
for i in range(n):
    flop += ((s_first + i + 1) // R) * HI * DI * 2
for lab, st, mr, ex in [("direct (base)", 3, 224, {}), ("MMA only", 3, 224, {"EPI": 2}), ("no relu/weight", 3, 224, {"EPI": 0}),
                        ("w reload cap168", 3, 168, {"WRELOAD": 1}), ("w reload cap200", 3, 200, {"WRELOAD": 1}),
                        ("TMA", 3, 224, {"TMA": 1}), ("TMA MMA only", 3, 224, {"TMA": 1, "EPI": 2}),
                        ("TMA st4", 4, 224, {"TMA": 1}), ("TMA w reload cap168", 3, 168, {"TMA": 1, "WRELOAD": 1}),
                        ("direct st2", 2, 224, {})]:
    ex = dict({"EPI": 1, "TMA": 0, "WRELOAD": 0}, **ex)
    o = torch.full((n, ld), float("nan"), device="cuda")
    kk = kdesc if ex["TMA"] else k8
    def run():
        score_exp.score_kernel[(n // 4,)](q8, qs, w, kk, ks, o, segments_arg(None, n, w), s_first, n, T,
            q8.stride(0), w.stride(0), k8.stride(0), o.stride(0), RATIO=R, HI=HI, DI=DI, HP=HI, DP=DI, BQ=4,
            BT=64, IEEE=False, QUANT=True, OPERAND=2, VARLEN=False, DIRECT=1, num_warps=4, num_stages=st,
            maxnreg=mr, **ex)
    try:
        run()
        same = bool(torch.equal(torch.nan_to_num(o, 7.0), torch.nan_to_num(ref, 7.0)))
        t = triton.testing.do_bench(run, warmup=20, rep=300, return_mode="median")
        recs.append({"variant": lab, "stages": st, "maxnreg": mr, **ex, "ms": t, "tflops": flop / t / 1e9,
                     "identical": same})
    except Exception as e:
        recs.append({"variant": lab, "error": f"{type(e).__name__}: {str(e)[:400]}"})
    json.dump(recs, open(os.path.join(out_dir, "score-sweep3.json"), "w"), indent=1)
for r in recs:
    print(r)
