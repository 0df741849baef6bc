"""RoPE: frequencies and tables (tables.py), the PyTorch reference (naive.py), the in-place
Triton kernel (kernel.py), its cost model (cost.py) and its IR for a GPU target (ir.py)."""
from .tables import Rotary, cos_sin, inv_freq, rope_tables

__all__ = ["Rotary", "cos_sin", "inv_freq", "rope_tables"]
