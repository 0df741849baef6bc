"""Probe: the persistent listed seesaw kernel (v4-flash's 64 heads only: its 128-head kernel does not lower) at
spans 1..8 queries a CTA: attention alone, and v4-flash composed at 262,144; digests must not depend on the span."""
import json, os, sys
import torch
from gpu_attention_ab import attention_alone
from gpu_overlap_check import forward_case
from gpu_select_check import DEFAULT, timed
from kernels_tilelang.sparse_mla import kernel as sm

def main():
    out, tag = sys.argv[1], sys.argv[2]
    spans = (1, 2, 4, 8) if hasattr(sm, "SEESAW_SPAN") else (0,)
    recs = []
    for span in spans:
        if span:
            sm.SEESAW_SPAN = span
        r = attention_alone("v4-flash"); r.update(span=span, tag=tag); recs.append(r)
        print(f"{tag} span={span} {r['case']:<32} {r['median_ms']:8.3f} ms {r['tflops']:6.1f} TFLOP/s {r['digest']}", flush=True)
    case = forward_case("v4-flash 262144", "v4-flash", 262144, DEFAULT)
    for span in spans + spans:
        if span:
            sm.SEESAW_SPAN = span
        r = timed(case); r.update(span=span, tag=tag); recs.append(r)
        print(f"{tag} span={span} {r['case']:<32} {r['median_ms']:8.3f} ms {r['digest']}", flush=True)
    json.dump(recs, open(os.path.join(out, f"persist2-{tag}.json"), "w"), indent=1)

if __name__ == "__main__":
    main()
