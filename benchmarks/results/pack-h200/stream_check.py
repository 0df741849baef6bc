"""One stream against the score overlap (the default) on this tree, alternating, same inputs, outputs compared."""
import os, sys
from gpu_overlap_check import forward_case, indexer_case, run_all
V = [("overlap", True, None), ("one stream", False, None), ("overlap, again", True, None),
     ("one stream, again", False, None)]
run_all([lambda: forward_case("v4-flash 262144", "v4-flash", 262144, V),
         lambda: indexer_case("v4-flash", 262144, V),
         lambda: forward_case("v4-pro 262144", "v4-pro", 262144, V)],
        os.path.join(sys.argv[1], "stream-check.json"))
