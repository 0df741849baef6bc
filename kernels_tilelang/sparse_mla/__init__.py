"""Sparse MLA attention: the PyTorch reference (naive.py), the warp-specialised TileLang kernel for
Hopper (kernel.py), its cost model (cost.py) and its IR and resources without a GPU (ir.py).
TileLang itself is imported lazily, inside the builders: the package imports without it."""
