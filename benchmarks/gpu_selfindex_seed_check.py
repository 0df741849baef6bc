"""Diagnose a failed GPU test seed of tests/test_layer_kinds_gpu.py::test_selfindex_composed_16k (seed 1799613470):
recall of the self-index selection against the exact 1-bit scores of the reference compressor's rows (as the
test does) and of the rows the pipeline itself used, with the overlap on and off.

    python benchmarks/gpu_selfindex_seed_check.py OUT.json"""
import torch, json, sys
import csa_dsl
from kernels_triton.compressor import naive as comp_naive
from kernels_triton.compressor import kernel as comp_kernel
from kernels_triton.indexer import naive as ix_ref
from kernels_triton.rope.tables import cos_sin
from pipeline.metrics import tie_aware_recall
from pipeline.stages.compressor import params, role_quant, rotary
seed = 1799613470
torch.manual_seed(seed)
spec = csa_dsl.preset("v4-flash-selfindex")
S, W = 16384, spec.attention.window
inp = csa_dsl.random_inputs(spec, 1, S, "cuda", seed=seed)
res = {}
idxs = {}
for ov in (True, False):
    fwd = csa_dsl.compile(spec, "cuda", schedule=csa_dsl.Schedule(overlap=ov))
    _, idxs[ov] = fwd(**inp, return_indices=True)
res["overlap_on_equals_off"] = bool(torch.equal(idxs[True], idxs[False]))
idx = idxs[True]
c = spec.compressor
cos, sin = (t.contiguous() for t in cos_sin(rotary(c.rope), torch.arange(S, device="cuda")))
kw = dict(**params(c), cos=cos, sin=sin, **role_quant(spec, "cmp"))
ref_rows = comp_naive.compress(inp["cmp_kv"], inp["cmp_gate"], inp["cmp_ape"], inp["cmp_norm"], **kw)[0]
ker_rows = comp_kernel.compress(inp["cmp_kv"], inp["cmp_gate"], inp["cmp_ape"], inp["cmp_norm"], **kw)[0]
res["rows_differing"] = int((ref_rows != ker_rows).any(-1).sum())
for name, rows in (("reference compressor rows", ref_rows), ("the pipeline's (Triton) compressor rows", ker_rows)):
    keys = rows.double()
    sign = torch.where(keys >= 0, 1.0, -1.0).double()
    out = {}
    for s0 in (0, 8192, S - 256):
        pos = torch.arange(s0, s0 + 256, device="cuda")
        exact = (inp["q"][0, s0:s0 + 256].double().sum(1) @ sign.T) * keys.abs().mean(-1)[None, :]
        exact = ix_ref.mask_invisible(exact.float(), pos, spec.ratio)
        sel = idx[0, s0:s0 + 256, W:]
        rec, det = tie_aware_recall(torch.where(sel >= 0, sel - S, sel), exact, spec.topk_eff(S))
        out[s0] = {"recall": rec, **det}
    res[name] = out
print(json.dumps(res, indent=1))
json.dump(res, open(sys.argv[1], "w"), indent=1)
