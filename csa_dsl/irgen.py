"""Generated IR at every level, without a GPU: spec, plan, Triton ttir/ttgir/llir/ptx, TileLang tir/cuda."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

from .spec import Pipeline, SpecError

LEVELS = ("spec", "plan", "ttir", "ttgir", "llir", "ptx", "tir", "cuda")
TRITON_LEVELS = ("ttir", "ttgir", "llir", "ptx")
TILELANG_LEVELS = ("tir", "cuda")
ALL = "all"  # spec, plan and every level of every stage

# stage -> (backend, kernel description, levels)
STAGES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "compressor": ("triton", "gated pooling + RMSNorm + RoPE (+ Hadamard): one kernel per compressor",
                   TRITON_LEVELS),
    "indexer": ("triton", "fused score: wgmma over visible key tiles, ReLU-weighted head sum", TRITON_LEVELS),
    "topk": ("triton", "partial top-k: window ids, group-max threshold, compaction, bitwise K-th-key select",
             TRITON_LEVELS),
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
    lines.append("")
    lines.append(f"levels: {', '.join(LEVELS)}, {ALL} (spec, plan and every level of every stage, or of --stage; "
                 f"best with -o DIR)")
    lines.append("files (-o DIR): <pipeline>.<stage>[-<part>].<level>, e.g. v4-flash.indexer.ttgir, "
                 "v4-flash.compressor-kv.ptx, v4-flash.attention.cuda, v4-flash.pipeline.plan")
    return "\n".join(lines)


def plan_items(level: str, stage: Optional[str]) -> List[Tuple[str, str]]:
    """The (stage, level) pairs a request produces, in output order; stage 'pipeline' for spec/plan."""
    if level not in LEVELS + (ALL,):
        raise SpecError(f"unknown level {level!r}; valid levels: {', '.join(LEVELS + (ALL,))}")
    if stage is not None and stage not in STAGES:
        raise SpecError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    if level == ALL:
        items = [("pipeline", "spec"), ("pipeline", "plan")]
        for st in ([stage] if stage else list(STAGES)):
            items += [(st, lv) for lv in STAGES[st][2]]
        return items
    if level in ("spec", "plan"):
        return [("pipeline", level)]
    names = [stage] if stage else list(STAGES)
    have = [s for s in names if level in STAGES[s][2]]
    if not have:
        valid = ", ".join(STAGES[stage][2] + ("spec", "plan", ALL))
        raise SpecError(f"stage {stage!r} has no level {level!r} (it is a {STAGES[stage][0]} kernel); "
                        f"its levels: {valid}")
    return [(s, level) for s in have]


def stages_for(level: str, stage: Optional[str]) -> List[str]:
    """Stage names a request covers ('pipeline' for spec/plan)."""
    return list(dict.fromkeys(st for st, _ in plan_items(level, stage)))


def generate(spec: Pipeline, level: str, stage: Optional[str] = None, seq_len: int = 262144, batch: int = 1,
             arch: str = "sm_90a", as_json: bool = False, budget: Optional[int] = None) -> Dict[str, str]:
    """{section name: text}. Section names are file-name friendly: '<stage>[-<part>].<level>'.

    level 'all': spec, plan, then every level of every stage (or of `stage`). Each kernel is
    compiled/lowered once per process (the compile_ir/lower functions cache). Under
    TRITON_INTERPRET=1 the Triton kernels cannot be compiled in this process, so all Triton
    sections of the call are compiled in one child process without the variable.
    """
    items = plan_items(level, stage)
    cap, arch_name = parse_arch(arch)
    triton_items = [it for it in items if STAGES.get(it[0], ("",))[0] == "triton"]
    triton: Dict[str, Dict[str, str]] = {}
    if triton_items:
        if _kernels_interpreted():
            triton = _triton_in_child(spec, triton_items, cap)
        else:
            triton = _triton_sections(spec, triton_items, cap)
    out: Dict[str, str] = {}
    for st, lv in items:
        if st == "pipeline":
            out.update(_pipeline_section(spec, lv, seq_len, batch, as_json, budget))
        elif (st, lv) in triton_items:
            out.update(triton[f"{st}.{lv}"])
        else:
            out.update(_named(st, lv, _stage_ir(spec, st, lv, cap, arch_name)))
    return out


def _named(stage: str, level: str, parts: Dict[str, str]) -> Dict[str, str]:
    return {f"{stage}{'-' + part if part else ''}.{level}": text for part, text in parts.items()}


def _pipeline_section(spec: Pipeline, level: str, seq_len: int, batch: int, as_json: bool,
                      budget: Optional[int]) -> Dict[str, str]:
    if level == "spec":
        return {"pipeline.spec" + (".json" if as_json else ""): spec.to_json() if as_json else str(spec)}
    from pipeline.composer import compose
    from pipeline.planner import choose_chunk
    if seq_len < 1 or batch < 1:
        raise SpecError("--seq and --batch must be positive")
    budget = budget if budget is not None else 8 * 2**30
    chunk = choose_chunk(spec, batch, seq_len, budget)
    prog = compose(spec, batch, seq_len, chunk, "cuda", budget)
    if as_json:
        return {"pipeline.plan.json": json.dumps(_program_json(prog), indent=1)}
    return {"pipeline.plan": str(prog)}


def _kernels_interpreted() -> bool:
    """Would (or did) the Triton kernels of this process get defined under TRITON_INTERPRET=1?"""
    mod = sys.modules.get("kernels_triton.indexer")
    if mod is not None:
        from triton.runtime.jit import JITFunction
        return not isinstance(mod._score_kernel, JITFunction)
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_sections(spec: Pipeline, items: List[Tuple[str, str]], cap: int) -> Dict[str, Dict[str, str]]:
    return {f"{st}.{lv}": _named(st, lv, _stage_ir(spec, st, lv, cap, "")) for st, lv in items}


def _triton_in_child(spec: Pipeline, items: List[Tuple[str, str]], cap: int) -> Dict[str, Dict[str, str]]:
    """_triton_sections in one fresh Python process with the interpreter off."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    req = json.dumps({"spec": spec.to_json(), "items": items, "arch": cap})
    with tempfile.TemporaryDirectory(prefix="csa-dsl-ir-") as tmp:
        result = os.path.join(tmp, "ir.json")
        r = subprocess.run([sys.executable, "-c", "from csa_dsl.irgen import _child_main; _child_main()", result],
                           input=req, capture_output=True, text=True, env=env, cwd=root)
        if r.returncode == 2:
            raise SpecError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "compiling the IR failed")
        if r.returncode != 0 or not os.path.exists(result):
            raise RuntimeError(f"compiling the Triton kernels in a child process failed:\n{r.stderr[-4000:]}")
        with open(result) as f:
            return json.load(f)


def _child_main() -> None:
    """Child of _triton_in_child: request (JSON) on stdin, sections (JSON) to the file named by argv[1]."""
    req = json.load(sys.stdin)
    try:
        res = _triton_sections(Pipeline.from_json(req["spec"]), [tuple(it) for it in req["items"]], req["arch"])
    except SpecError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    with open(sys.argv[1], "w") as f:
        json.dump(res, f)


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
        try:
            res = lower_sparse_mla_fwd(a.heads, a.qk_dim, a.v_dim, a.window + ix.topk, a.sink, arch=arch_name)
        except ValueError as e:  # e.g. an arch other than sm_90a, a head dim the kernel does not take
            raise SpecError(f"attention kernel: {e}") from None
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
