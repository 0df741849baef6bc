"""Quantise-dequantise steps of the official DeepSeek-V4 / V3.2 inference code (docs/semantics.md
section 5): block-wise FP8 e4m3 / FP4 e2m1 grids with power-of-two scales, and the FP8 packing the
indexer's FP8 score kernel reads. The PyTorch reference (naive.py), the Triton kernels and the
@triton.jit helpers the compressor and the score kernel fuse (kernel.py), the cost model (cost.py)
and the IR for a GPU target (ir.py)."""
