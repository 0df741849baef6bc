"""Packed vs unpacked ring kernel alone (with the fused inverse RoPE), and the v4-window forwards; hashes of
the outputs so that two trees can be compared bit for bit. argv: OUT_JSON"""
import json, sys
import torch, triton
import csa_dsl
from kernels_tilelang.sparse_mla import kernel as K
from kernels_triton.varlen import naive as vn

res = {}
spec = csa_dsl.preset("v4-window")
S = 262144
inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=1)
q, kv, sink = inp["q"], inp["kv"], inp["sink"]
g = torch.Generator(device="cuda").manual_seed(3)
cos = torch.rand(S, 32, device="cuda", generator=g)
sin = torch.rand(S, 32, device="cuda", generator=g)
seg = torch.empty(S, 4, dtype=torch.int32, device="cuda")
vn.segments(torch.tensor([0, 65536, 131072, 196608, 262144], dtype=torch.int32, device="cuda"), seg, ratio=0)
out = torch.empty_like(q)
def h(t):
    t = t.reshape(-1, t.shape[-1]); w = torch.arange(1, 1 + t.shape[-1], device="cuda", dtype=torch.int32); acc = 0
    for i in range(0, t.shape[0], 1 << 20):
        acc += int(t[i:i + (1 << 20)].view(torch.int16).to(torch.int32).mul_(w).sum(dtype=torch.int64))
    return acc
runs = {
 "kernel_unpacked": lambda: K.sparse_mla_fwd(q, kv, None, 0.04, 512, sink=sink, window=128, out=out, rope_cos=cos, rope_sin=sin),
 "kernel_packed": lambda: K.sparse_mla_fwd(q, kv, None, 0.04, 512, sink=sink, window=128, out=out, rope_cos=cos, rope_sin=sin, rope_seg=seg),
}
for name, fn in runs.items():
    out.fill_(float("nan")); fn(); torch.cuda.synchronize()
    res[name + "_hash"] = h(out); res[name + "_nan"] = int(out.isnan().sum())
for rnd in range(3):
    for name, fn in runs.items():
        res.setdefault(name + "_ms", []).append(triton.testing.do_bench(fn, warmup=3, rep=40, return_mode="median"))
fwd = csa_dsl.compile(spec, "cuda")
cu, pk = csa_dsl.random_packed_inputs(spec, [65536] * 4, "cuda", seed=1)
o = fwd.varlen(cu, max_seqlen=65536, **pk); res["fwd_packed_hash"] = h(o)
o = fwd(**inp); res["fwd_unpacked_hash"] = h(o); del o
for rnd in range(3):
    res.setdefault("fwd_packed_ms", []).append(triton.testing.do_bench(lambda: fwd.varlen(cu, max_seqlen=65536, **pk), warmup=3, rep=30, return_mode="median"))
    res.setdefault("fwd_unpacked_ms", []).append(triton.testing.do_bench(lambda: fwd(**inp), warmup=3, rep=30, return_mode="median"))
json.dump(res, open(sys.argv[1], "w"), indent=1)
print(json.dumps({k: v for k, v in res.items()}, indent=None))
