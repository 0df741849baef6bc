"""Triton kernels: lightning-indexer score + partial top-k, compressor, inverse RoPE."""
