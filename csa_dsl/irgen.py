"""Generated IR at every level, without a GPU: spec, plan, Triton ttir/ttgir/llir/ptx, TileLang tir/cuda."""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

from .spec import Pipeline, SpecError

LEVELS = ("spec", "plan", "ttir", "ttgir", "llir", "ptx", "tir", "cuda")
TRITON_LEVELS = ("ttir", "ttgir", "llir", "ptx")
TILELANG_LEVELS = ("tir", "cuda")

# stage -> (backend, kernel description, levels)
STAGES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "compressor": ("triton", "gated pooling + RMSNorm + RoPE (+ Hadamard): one kernel per compressor",
                   TRITON_LEVELS),
    "indexer": ("triton", "fused score: wgmma over visible key tiles, ReLU-weighted head sum", TRITON_LEVELS),
    "topk": ("triton", "partial top-k: group-max threshold, candidate compaction, sort", TRITON_LEVELS),
    "attention": ("tilelang", "sparse MLA forward, warp-specialised producer/consumer pipeline",
                  TILELANG_LEVELS),
    "rope": ("triton", "inverse RoPE epilogue on the output's last dims, in place", TRITON_LEVELS),
}


def parse_arch(arch: str) -> Tuple[int, str]:
    """'sm_90a' -> (90, 'sm_90a'); '90' -> (90, 'sm_90a')."""
    a = str(arch).lower().replace("sm_", "").replace("sm", "")
    suffix = "a" if a.endswith("a") else ""
    try:
        cap = int(a.rstrip("a"))
    except ValueError:
        raise SpecError(f"cannot read an arch from {arch!r}; write e.g. sm_90a") from None
    if cap < 80:
        raise SpecError(f"arch {arch!r}: the kernels need sm_80 or newer (Hopper is sm_90a)")
    return cap, f"sm_{cap}{suffix or ('a' if cap == 90 else '')}"


def list_stages() -> str:
    lines = [f"{'stage':<11} {'backend':<9} {'levels':<24} kernel"]
    for name, (backend, desc, levels) in STAGES.items():
        lines.append(f"{name:<11} {backend:<9} {','.join(levels):<24} {desc}")
    lines.append(f"{'(pipeline)':<11} {'-':<9} {'spec,plan':<24} normalised spec; composed loop plan for --seq")
    return "\n".join(lines)


def stages_for(level: str, stage: Optional[str]) -> List[str]:
    if level not in LEVELS:
        raise SpecError(f"unknown level {level!r}; valid levels: {', '.join(LEVELS)}")
    if stage is not None and stage not in STAGES:
        raise SpecError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    if level in ("spec", "plan"):
        return ["pipeline"]
    names = [stage] if stage else list(STAGES)
    have = [s for s in names if level in STAGES[s][2]]
    if not have:
        valid = ", ".join(STAGES[stage][2])
        raise SpecError(f"stage {stage!r} has no level {level!r} (it is a {STAGES[stage][0]} kernel); "
                        f"its levels: {valid}")
    return have


def generate(spec: Pipeline, level: str, stage: Optional[str] = None, seq_len: int = 262144, batch: int = 1,
             arch: str = "sm_90a", as_json: bool = False, budget: Optional[int] = None) -> Dict[str, str]:
    """{section name: text}. Section names are file-name friendly: '<stage>[-<part>].<level>'."""
    names = stages_for(level, stage)
    cap, arch_name = parse_arch(arch)
    out: Dict[str, str] = {}
    if level == "spec":
        out["pipeline.spec" + (".json" if as_json else "")] = spec.to_json() if as_json else str(spec)
        return out
    if level == "plan":
        from pipeline.composer import compose
        from pipeline.planner import choose_chunk
        budget = budget if budget is not None else 8 * 2**30
        chunk = choose_chunk(spec, batch, seq_len, budget)
        prog = compose(spec, batch, seq_len, chunk, "cuda", budget)
        if as_json:
            out["pipeline.plan.json"] = json.dumps(_program_json(prog), indent=1)
        else:
            out["pipeline.plan"] = str(prog)
        return out
    for st in names:
        for part, text in _stage_ir(spec, st, level, cap, arch_name).items():
            out[f"{st}{'-' + part if part else ''}.{level}"] = text
    return out


def _stage_ir(spec: Pipeline, stage: str, level: str, cap: int, arch_name: str) -> Dict[str, str]:
    ix, a = spec.indexer, spec.attention
    if stage == "indexer":
        from kernels_triton.indexer import compile_ir
        return {"": compile_ir("score", ix.heads, ix.dim, spec.ratio, ix.topk, arch=cap)[level]}
    if stage == "topk":
        from kernels_triton.indexer import compile_ir
        return {"": compile_ir("select", ix.heads, ix.dim, spec.ratio, ix.topk, window=a.window, arch=cap)[level]}
    if stage == "compressor":
        from kernels_triton import compressor as kc
        parts = {}
        for part, c in (("kv", spec.compressor), ("idx", ix.compressor)):
            if c is None:
                continue
            parts[part] = kc.compile_ir(dim=c.dim, ratio=c.ratio, overlap=c.overlap, hadamard=c.hadamard,
                                        rope_dim=c.rope.dim if c.rope else 0, arch=cap)[level]
        if not parts:
            parts[""] = f"// pipeline {spec.name!r} has no compressor (ratio 1): no compressor kernel\n"
        return parts
    if stage == "rope":
        from kernels_triton import rope as kr
        if a.inverse_rope is None:
            return {"": f"// pipeline {spec.name!r} has no inverse RoPE epilogue: no kernel\n"}
        return {"": kr.compile_ir(heads=a.heads, v_dim=a.v_dim, rope_dim=a.inverse_rope.dim, arch=cap)[level]}
    if stage == "attention":
        from kernels_tilelang.sparse_mla import lower_sparse_mla_fwd
        res = lower_sparse_mla_fwd(a.heads, a.qk_dim, a.v_dim, a.window + ix.topk, a.sink, arch=arch_name)
        return {"": res[level]}
    raise SpecError(f"unknown stage {stage!r}")


def _program_json(prog) -> dict:
    from pipeline.ir import Call, Loop

    def node(n):
        if isinstance(n, Loop):
            return {"loop": n.var, "start": n.start, "stop": n.stop, "step": n.step, "note": n.note,
                    "body": [node(x) for x in n.body]}
        assert isinstance(n, Call)
        return {"op": n.op, "stage": n.stage, "kernel": n.kernel, "reads": n.reads, "writes": n.writes,
                "note": n.note}
    return {
        "name": prog.name, "batch": prog.batch, "seq_len": prog.seq_len, "chunk": prog.chunk,
        "buffers": [{"name": b.name, "shape": list(b.shape), "dtype": str(b.dtype).replace("torch.", ""),
                     "scope": b.scope, "bytes": b.nbytes, "note": b.note} for b in prog.buffers.values()],
        "body": [node(n) for n in prog.body], "fused": prog.fused, "decisions": prog.decisions,
        "workspace_bytes": prog.workspace_bytes, "materialize_bytes": prog.materialize_bytes,
    }
