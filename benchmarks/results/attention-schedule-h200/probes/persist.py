"""Probe: the persistent listed seesaw kernel's span (queries a CTA): attention alone (bench attention's
inputs) at spans 1..16, and v4-flash composed at 262,144 at a few spans; digests must not depend on span."""
import json, os, sys
import torch
from gpu_attention_ab import attention_alone
from gpu_overlap_check import forward_case
from gpu_select_check import DEFAULT, timed
from kernels_tilelang.sparse_mla import kernel as sm

def main():
    out, tag = sys.argv[1], sys.argv[2]
    recs = []
    for span in (1, 2, 4, 8, 16):
        sm.SEESAW_SPAN = span
        for name in ("v4-flash", "v4-pro"):
            r = attention_alone(name); r.update(span=span, tag=tag); recs.append(r)
            print(f"{tag} span={span:2d} {r['case']:<32} {r['median_ms']:8.3f} ms {r['tflops']:6.1f} TFLOP/s {r['digest']}", flush=True)
            torch.cuda.empty_cache()
    case = forward_case("v4-flash 262144", "v4-flash", 262144, DEFAULT)
    for span in (1, 4, 8, 2, 4):
        sm.SEESAW_SPAN = span
        r = timed(case); r.update(span=span, tag=tag); recs.append(r)
        print(f"{tag} span={span:2d} {r['case']:<32} {r['median_ms']:8.3f} ms {r['digest']}", flush=True)
    json.dump(recs, open(os.path.join(out, f"persist-{tag}.json"), "w"), indent=1)

if __name__ == "__main__":
    main()
