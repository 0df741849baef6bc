"""The lightning indexer and its top-k: the PyTorch reference (naive.py), the Triton score and
selection kernels (kernel.py), their cost model (cost.py) and their IR for a GPU target (ir.py)."""
