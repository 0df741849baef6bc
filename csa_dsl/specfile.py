"""Resolve a pipeline from a preset name or a SPEC.py file.

SPEC.py convention: a Python file that defines, at module level, a variable `pipeline` holding
a `csa_dsl.Pipeline` (or, failing that, exactly one Pipeline object under any name). Example:

    import csa_dsl
    pipeline = csa_dsl.preset("v4-flash").replace(name="flash-h32",
        attention=csa_dsl.SparseAttention(heads=32, qk_dim=512, v_dim=512))
"""
from __future__ import annotations

import dataclasses
import os
import runpy
import traceback
from typing import Optional

from pipeline.lang.errors import SpecError
from pipeline.lang.presets import PRESET_NAMES, preset
from pipeline.lang.spec import Indexer, Pipeline


def load_pipeline(ref: str, score_rounding: Optional[str] = None, fp8_mma: Optional[bool] = None) -> Pipeline:
    """The pipeline of a preset name or a SPEC.py; `score_rounding` and `fp8_mma` (None: the spec's own) replace
    its lightning indexer's Indexer.score_rounding and Indexer.fp8_mma."""
    spec = _load(ref)
    changes = {k: v for k, v in (("score_rounding", score_rounding), ("fp8_mma", fp8_mma)) if v is not None}
    if not changes:
        return spec
    if not isinstance(spec.indexer, Indexer):
        raise SpecError(f"{' and '.join(changes)} {'is' if len(changes) == 1 else 'are'} the lightning indexer's; "
                        f"pipeline {spec.name!r} has "
                        + ("a self-index" if spec.indexer is not None else f"no indexer (a {spec.layer.upper()} "
                                                                             f"layer)"))
    return spec.replace(indexer=dataclasses.replace(spec.indexer, **changes))


def _load(ref: str) -> Pipeline:
    if ref in PRESET_NAMES:
        return preset(ref)
    if ref.endswith(".py") or os.path.sep in ref:
        if not os.path.exists(ref):
            raise SpecError(f"spec file {ref!r} does not exist")
        try:
            ns = runpy.run_path(ref)
        except SpecError as e:
            raise SpecError(f"{ref}: {e}") from None
        except SyntaxError as e:
            raise SpecError(f"{ref}:{e.lineno}: SyntaxError: {e.msg}") from None
        except Exception as e:  # noqa: BLE001 - any error of the user's file becomes one line that points at it
            frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename)
                      == os.path.abspath(ref)]
            where = f"{ref}:{frames[-1].lineno}" if frames else ref
            raise SpecError(f"{where}: {type(e).__name__}: {e}") from None
        if isinstance(ns.get("pipeline"), Pipeline):
            return ns["pipeline"]
        found = [v for k, v in ns.items() if isinstance(v, Pipeline) and not k.startswith("_")]
        if len(found) == 1:
            return found[0]
        if not found:
            raise SpecError(f"{ref} defines no pipeline: assign a csa_dsl.Pipeline to a module-level variable "
                            f"named `pipeline` (e.g. `pipeline = csa_dsl.preset('v4-flash')`)")
        raise SpecError(f"{ref} defines {len(found)} Pipeline objects; name the one to use `pipeline`")
    raise SpecError(f"unknown preset {ref!r}; valid presets: {', '.join(PRESET_NAMES)}, or a path to a SPEC.py "
                    f"that defines `pipeline`")
