"""Generated IR at every level, without a GPU: spec, plan, Triton ttir/ttgir/llir/ptx, TileLang tir/cuda.

The stages and their levels come from the stage registry (pipeline.stages.IR_SECTIONS); a spec
the kernels cannot take is refused before anything is compiled (the same check as compile()).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

from kernels_triton._env import compiling_env, kernels_interpreted
from kernels_triton.indexer.kernel import _score_kernel
from pipeline import planner
from pipeline.context_parallel import compose_rank
from pipeline.lang import defaults
from pipeline.lang.errors import SpecError
from pipeline.lang.spec import Pipeline
from pipeline.program import Program
from pipeline.stages import IR_SECTIONS, unsupported

PIPELINE_LEVELS = ("spec", "plan")
KERNEL_LEVELS = tuple(dict.fromkeys(lv for s in IR_SECTIONS.values() for lv in s.levels))
LEVELS = PIPELINE_LEVELS + KERNEL_LEVELS
ALL = "all"  # spec, plan and every level of every stage


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
    for name, s in IR_SECTIONS.items():
        lines.append(f"{name:<11} {s.backend:<9} {','.join(s.levels):<24} {s.doc}")
    lines.append(f"{'(pipeline)':<11} {'-':<9} {'spec,plan':<24} normalised spec; the Program for --seq "
                 f"(--nproc N: rank --rank's program of a context-parallel run)")
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
    if stage is not None and stage not in IR_SECTIONS:
        raise SpecError(f"unknown stage {stage!r}; valid stages: {', '.join(IR_SECTIONS)}")
    if level == ALL:
        items = [("pipeline", "spec"), ("pipeline", "plan")]
        for st in ([stage] if stage else list(IR_SECTIONS)):
            items += [(st, lv) for lv in IR_SECTIONS[st].levels]
        return items
    if level in PIPELINE_LEVELS:
        return [("pipeline", level)]
    names = [stage] if stage else list(IR_SECTIONS)
    have = [s for s in names if level in IR_SECTIONS[s].levels]
    if not have:
        valid = ", ".join(IR_SECTIONS[stage].levels + PIPELINE_LEVELS + (ALL,))
        raise SpecError(f"stage {stage!r} has no level {level!r} (it is a {IR_SECTIONS[stage].backend} kernel); "
                        f"its levels: {valid}")
    return [(s, level) for s in have]


def generate(spec: Pipeline, level: str, stage: Optional[str] = None, seq_len: int = defaults.GPU_SEQ_LEN,
             batch: int = 1, arch: str = "sm_90a", as_json: bool = False, budget: Optional[int] = None,
             nproc: int = 1, rank: int = 0) -> Dict[str, str]:
    """{section name: text}. Section names are file-name friendly: '<stage>[-<part>].<level>'.

    level 'all': spec, plan, then every level of every stage (or of `stage`). Each kernel is
    compiled or lowered once per process. Kernels defined under TRITON_INTERPRET=1 cannot be
    compiled in this process, so all Triton sections of the call are compiled in one child
    process without the variable."""
    items = plan_items(level, stage)
    cap, _ = parse_arch(arch)
    if any(lv != "spec" for _, lv in items):
        why = unsupported(spec, "cuda")
        if why is not None:
            raise SpecError(f"pipeline {spec.name!r} cannot be compiled for the GPU kernels: {why}")
    triton_items = [it for it in items if it[0] != "pipeline" and IR_SECTIONS[it[0]].backend == "triton"]
    triton: Dict[str, Dict[str, str]] = {}
    if triton_items:
        if kernels_interpreted(_score_kernel):
            triton = _triton_in_child(spec, triton_items, cap)
        else:
            triton = _sections(spec, triton_items, cap)
    out: Dict[str, str] = {}
    for st, lv in items:
        if st == "pipeline":
            out.update(_pipeline_section(spec, lv, seq_len, batch, as_json, budget, nproc, rank))
        elif (st, lv) in triton_items:
            out.update(triton[f"{st}.{lv}"])
        else:
            out.update(_sections(spec, [(st, lv)], cap)[f"{st}.{lv}"])
    return out


def _named(stage: str, level: str, parts: Dict[str, str]) -> Dict[str, str]:
    return {f"{stage}{'-' + part if part else ''}.{level}": text for part, text in parts.items()}


def _sections(spec: Pipeline, items: List[Tuple[str, str]], cap: int) -> Dict[str, Dict[str, str]]:
    return {f"{st}.{lv}": _named(st, lv, IR_SECTIONS[st].emit(spec, lv, cap)) for st, lv in items}


def _pipeline_section(spec: Pipeline, level: str, seq_len: int, batch: int, as_json: bool,
                      budget: Optional[int], nproc: int, rank: int) -> Dict[str, str]:
    if level == "spec":
        return {"pipeline.spec" + (".json" if as_json else ""): spec.to_json() if as_json else str(spec)}
    if seq_len < 1 or batch < 1:
        raise SpecError("--seq and --batch must be positive")
    budget = budget if budget is not None else defaults.IR_PLAN_BUDGET
    if nproc > 1:
        prog = compose_rank(spec, batch, seq_len, nproc, rank, "cuda", budget=budget)
    else:
        prog = planner.plan(spec, batch, seq_len, "cuda", budget)
    return _program_section(prog, as_json)


def _program_section(prog: Program, as_json: bool) -> Dict[str, str]:
    if as_json:
        return {"pipeline.plan.json": prog.to_json()}
    return {"pipeline.plan": str(prog)}


def _triton_in_child(spec: Pipeline, items: List[Tuple[str, str]], cap: int) -> Dict[str, Dict[str, str]]:
    """_sections in one fresh Python process with the interpreter off."""
    root, env = compiling_env()
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
        res = _sections(Pipeline.from_json(req["spec"]), [tuple(it) for it in req["items"]], req["arch"])
    except SpecError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    with open(sys.argv[1], "w") as f:
        json.dump(res, f)
