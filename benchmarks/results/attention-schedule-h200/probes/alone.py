"""attention alone (bench attention's inputs): v4-flash, v4-pro, and folded into 2,048 rows; prints ms, TFLOP/s, digest."""
import json, os, sys
from gpu_attention_ab import attention_alone
out, tag = sys.argv[1], sys.argv[2]
recs = []
for name, rows in (("v4-flash", 0), ("v4-pro", 0), ("v4-flash", 2048)):
    r = attention_alone(name, rows_from=rows); r["tag"] = tag; recs.append(r)
    print(f"{tag:<10} {r['case']:<36} {r['median_ms']:8.3f} ms {r['tflops']:6.1f} TFLOP/s {r['digest']}", flush=True)
json.dump(recs, open(os.path.join(out, f"alone-{tag}.json"), "w"), indent=1)
