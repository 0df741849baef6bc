"""The packing of one chunk's index queries at several program sizes (this tree's kernel), digests compared."""
import json, sys, torch, triton
sys.path.insert(0, "benchmarks")
from gpu_select_check import digest
from kernels_triton.quant import kernel as qk
out_dir, tag = sys.argv[1], sys.argv[2]
g = torch.Generator(device="cuda").manual_seed(1)
q = torch.randn(2048, 64, 128, device="cuda", generator=g).bfloat16()
q8 = torch.empty(q.shape, dtype=torch.float8_e4m3fn, device="cuda"); qs = torch.empty(q.shape[:-1], device="cuda")
recs = []
for elems, warps in [(512, 1), (1024, 1), (2048, 1), (1024, 2), (2048, 2), (4096, 4), (512, 1)]:
    qk.PACK_ELEMS, qk.PACK_WARPS = elems, warps
    run = lambda: qk.pack_rows(q, q8, qs, fmt="e2m1", block=32)
    run(); torch.cuda.synchronize()
    d = digest(q8) + digest(qs)
    ms = triton.testing.do_bench(run, warmup=50, rep=300, return_mode="median")
    recs.append(dict(tree=tag, elems=elems, warps=warps, median_us=ms * 1e3, digest=d))
    print(f"{tag} pack elems {elems:5d} warps {warps}: {ms*1e3:7.2f} us  {d}")
json.dump(recs, open(f"{out_dir}/pack-sweep-{tag}.json", "w"), indent=1)
