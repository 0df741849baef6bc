"""The 1-bit self-index (docs/semantics.md section 7): sign codes of the attention keys score the
head-summed query. The PyTorch reference (naive.py), the Triton kernels (kernel.py), their cost
model (cost.py) and their IR for a GPU target (ir.py)."""
