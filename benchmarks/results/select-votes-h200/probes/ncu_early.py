"""One selection launch of an early chunk (fixed per-row costs dominate), for Nsight Compute:
python ncu_early.py PRESET SEQ -> the chunk of queries [SEQ - 2048, SEQ), as ncu_one_launch's last_chunk_launches."""
import sys
import torch
from ncu_one_launch import last_chunk_launches
run = last_chunk_launches(name=sys.argv[1], seq=int(sys.argv[2]))["select-gmax"]
for _ in range(3):
    run()
torch.cuda.synchronize()
torch.cuda.profiler.start()
run()
torch.cuda.synchronize()
torch.cuda.profiler.stop()
