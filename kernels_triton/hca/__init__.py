"""HCA key lists (DeepSeek-V4's m = 128 layers, docs/semantics.md section 6): the window, then every
visible compressed row. The PyTorch reference (naive.py), the Triton kernel (kernel.py), its cost
model (cost.py) and its IR for a GPU target (ir.py)."""
