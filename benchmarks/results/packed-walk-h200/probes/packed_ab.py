"""packed 4x65536 vs own 65536 (v4-flash, default schedule) on the tree first on PYTHONPATH."""
import sys
import kernels_triton
from gpu_select_check import FORWARDS, run_records
print("kernels_triton from", kernels_triton.__file__)
run_records([FORWARDS[2], FORWARDS[3]], "packed-ab", sys.argv[1], sys.argv[2])
