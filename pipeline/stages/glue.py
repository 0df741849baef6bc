"""Stage kind `glue`: data movement between stages (no spec of its own)."""
from __future__ import annotations

import torch

from .base import Impl, Op, StageKind


def copy(src: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(src)


COPY = Op("glue.copy", "out <- src", writes=("out",),
          impls={b: Impl(copy, "copy") for b in ("torch", "interpret", "cuda")})

KIND = StageKind(kind="glue", spec_type=type(None), doc="copies between stage buffers", ops={"copy": COPY},
                 inputs=lambda pipe, stage, role: {})
