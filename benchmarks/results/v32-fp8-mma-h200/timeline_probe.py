import os, sys, torch
if os.environ.get("FP8MMA"):
    from kernels_triton.quant import formats
    formats.MMA_DTYPE["e4m3"] = torch.float8_e4m3fn
import gpu_timeline
gpu_timeline.main()
