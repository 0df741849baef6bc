"""v4-flash composed at 262,144 with the default overlap at query chunks that fill whole waves of the H200's 132 SMs
(8 queries a score CTA: 1,056 = 1 wave, 2,112 = 2) against the planner's 2,048 and 1,024; alternating, outputs compared."""
import os, sys
from gpu_overlap_check import forward_case, run_all
V = [("chunk 2048 (planner)", True, 2048), ("chunk 2112", True, 2112), ("chunk 1056", True, 1056),
     ("chunk 1024", True, 1024)]
run_all([lambda: forward_case("v4-flash 262144", "v4-flash", 262144, V)], os.path.join(sys.argv[1], "chunk-check.json"))
