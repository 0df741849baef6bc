import sys, json, torch
from gpu_select_check import pack_alone
tag = sys.argv[2]
recs = [dict(pack_alone(), tree=tag) for _ in range(3)]
for r in recs: print(tag, r["case"], round(r["median_ms"] * 1000, 1), "us", r["digest"])
json.dump(recs, open(f"{sys.argv[1]}/pack-alone-{tag}.json", "w"), indent=1)
