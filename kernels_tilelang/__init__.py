"""TileLang kernels of csa-dsl (Hopper, sm_90a)."""

from .sparse_mla import (  # noqa: F401
    build_sparse_mla_fwd,
    kernel_resources,
    lower_sparse_mla_fwd,
    sparse_mla_fwd,
    validate_sparse_mla_inputs,
)

__all__ = [
    "build_sparse_mla_fwd",
    "kernel_resources",
    "lower_sparse_mla_fwd",
    "sparse_mla_fwd",
    "validate_sparse_mla_inputs",
]
