"""The compressor: the PyTorch reference (naive.py), the one-pass Triton kernel (kernel.py), its
cost model (cost.py) and its IR for a GPU target (ir.py)."""
