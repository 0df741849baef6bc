"""Triton kernels of csa-dsl, one folder per stage (naive.py reference, kernel, cost model, IR):
indexer/ (score + top-k), compressor/, rope/. Plain sizes in, no spec objects."""
