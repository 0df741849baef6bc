"""Packed variable-length batches (docs/semantics.md section 8): the segment tables every kernel reads
to keep each sequence to itself. The PyTorch ops (naive.py; device-side, no host sync, so they run
on every backend and inside a CUDA graph), the @triton.jit helper the kernels load them with
(kernel.py) and the validation of `cu_seqlens`."""
