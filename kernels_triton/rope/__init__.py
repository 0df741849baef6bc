"""RoPE: frequencies and tables (tables.py), the PyTorch reference (naive.py), the in-place
Triton kernel (kernel.py), its cost model (cost.py) and its IR for a GPU target (ir.py)."""
from .tables import Rotary, cos_sin, fill_tables, inv_freq

__all__ = ["Rotary", "cos_sin", "fill_tables", "inv_freq"]
