"""The CLI end to end on a CPU: `csa-dsl run` (reference and composed paths), `csa-dsl ir`
at every level for every preset (kernels compiled/lowered for sm_90a without a GPU), and
the error paths (exit code 2 with the valid choices).

Commands that compile Triton kernels run in subprocesses with `clean_env` (no
TRITON_INTERPRET); the quick ones run in-process through `csa_dsl.cli.main`.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import csa_dsl
from csa_dsl.cli import main
from pipeline.composer import walk_calls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = csa_dsl.PRESET_NAMES


def _csa_dsl_cmd():
    """The installed console script, else `python -m csa_dsl` (the same CLI)."""
    exe = os.path.join(os.path.dirname(sys.executable), "csa-dsl")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("csa-dsl")
    return [found] if found else [sys.executable, "-m", "csa_dsl"]


def _run(cmd, env, timeout=300):
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def _main(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------
# csa-dsl run
def test_run_cpu_reference_json(clean_env, tmp_path):
    rec_path = tmp_path / "r.json"
    rc, out, err = _run(_csa_dsl_cmd() + ["run", "v4-flash", "--seq", "256", "--reps", "1", "--json",
                                          str(rec_path)], clean_env)
    assert rc == 0, err
    assert "No CUDA GPU found" in out and "reference path" in out, out
    assert re.search(r"time: median [\d.]+ ms", out), out
    assert re.search(r"peak memory: [\d.]+ GiB", out), out
    recs = json.loads(rec_path.read_text())
    rec = recs[0] if isinstance(recs, list) else recs
    for key in ("bench", "preset", "seq_len", "median_ms", "peak_gib", "commit", "versions"):
        assert key in rec, f"record lacks {key!r}: {rec}"
    assert rec["preset"] == "v4-flash" and rec["seq_len"] == 256 and rec["median_ms"] > 0
    assert rec["path"] == "reference" and "torch" in rec["versions"]


def test_run_cpu_composed_python_m(clean_env):
    """`python -m csa_dsl` is the same CLI; the composed path runs on the CPU too."""
    rc, out, err = _run([sys.executable, "-m", "csa_dsl", "run", "v4-flash", "--seq", "256", "--reps", "1",
                         "--path", "composed"], clean_env)
    assert rc == 0, err
    assert "No CUDA GPU found" in out and "composed path" in out, out
    assert "time: median" in out and "peak memory" in out and "NaN 0" in out, out


# ---------------------------------------------------------------------------------------
# csa-dsl ir --level all -o DIR, every preset (the three run side by side)
@pytest.fixture(scope="module")
def ir_dirs(tmp_path_factory):
    """{preset: DIR} after `csa-dsl ir PRESET --level all -o DIR` (plan at S = 262,144)."""
    # the environment of tests/conftest.py's clean_env (a module fixture cannot take a function fixture)
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    base = tmp_path_factory.mktemp("ir")
    procs = {}
    for p in PRESETS:
        d = base / p
        procs[p] = (d, subprocess.Popen([sys.executable, "-m", "csa_dsl", "ir", p, "--level", "all", "--seq",
                                         "262144", "-o", str(d)], env=env, cwd=ROOT, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    dirs = {}
    for p, (d, proc) in procs.items():
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, f"{p}: {err[-3000:]}"
        assert "wrote" in out
        dirs[p] = d
    return dirs


def _read(d, preset, name):
    path = d / f"{preset}.{name}"
    assert path.exists(), f"missing {path.name}; have {sorted(x.name for x in d.iterdir())}"
    text = path.read_text()
    assert text.strip(), f"{path.name} is empty"
    return text


@pytest.mark.parametrize("preset", PRESETS)
def test_ir_all_files(ir_dirs, preset):
    d = ir_dirs[preset]
    spec = csa_dsl.preset(preset)
    names = {x.name for x in d.iterdir()}
    expect = {f"{preset}.pipeline.spec", f"{preset}.pipeline.plan", f"{preset}.attention.tir",
              f"{preset}.attention.cuda"}
    expect |= {f"{preset}.{st}.{lv}" for st in ("indexer", "topk", "hca") for lv in ("ttir", "ttgir", "llir", "ptx")}
    assert expect <= names, sorted(expect - names)
    for n in names:
        _read(d, preset, n[len(preset) + 1:])

    if isinstance(spec.indexer, csa_dsl.Indexer):
        # indexer: a loop over the visible key tiles, wgmma, pipelined (async) key loads: the Gluon walk of 64 heads
        # x 128 dims (every preset's, FP8 or bf16 operands) by TMA from a producer warp (warp-specialised), other
        # sizes' Triton walk by cp.async
        assert "scf.for" in _read(d, preset, "indexer.ttir")
        ttgir = _read(d, preset, "indexer.ttgir")
        if (spec.indexer.heads, spec.indexer.dim) == (64, 128):
            assert "warp_group_dot" in ttgir and "async_tma_copy_global_to_local" in ttgir
            assert "ttg.warp_specialize" in ttgir
            assert re.search(r"scf\.for %j = %c0_i32 to %n_tiles", ttgir), "key-tile loop is not bounded by n_tiles"
        else:
            assert "warp_group_dot" in ttgir and "async_copy_global_to_local" in ttgir
            assert re.search(r"scf\.for %\w+ = %c0_i32 to %t_end", ttgir), "key-tile loop is not bounded by t_end"
        ptx = _read(d, preset, "indexer.ptx")
        assert ".version" in ptx and ".target sm_90a" in ptx
        assert "wgmma" in ptx or "mma" in ptx
        assert ".version" in _read(d, preset, "topk.ptx")
    elif spec.indexer is not None:      # the self-index: its codes and scores, then the same top-k kernel
        assert "no lightning indexer" in _read(d, preset, "indexer.ptx")
        assert ".version" in _read(d, preset, "topk.ptx") and ".version" in _read(d, preset, "selfindex-codes.ptx")
        assert "warp_group_dot" in _read(d, preset, "selfindex-score.ttgir")
    else:
        for st in ("indexer", "topk"):
            assert "no indexer, no top-k" in _read(d, preset, f"{st}.ptx")
    if not isinstance(spec.indexer, csa_dsl.SelfIndex):
        assert "has no self-index" in _read(d, preset, "selfindex.ptx")
    if spec.layer == "hca":
        assert ".version" in _read(d, preset, "hca.ptx") and "tt.func" in _read(d, preset, "hca.ttgir")
    else:
        assert "no HCA key lists" in _read(d, preset, "hca.ptx")

    # attention: Hopper wgmma and the mbarrier producer/consumer pipeline
    cuda = _read(d, preset, "attention.cuda")
    assert "wgmma" in cuda and "__global__" in cuda
    assert "mbarrier" in cuda and re.search(r"bar_kv_full\[[^\]]*\]\.wait\(", cuda)
    tir = _read(d, preset, "attention.tir")
    assert "@T.prim_func" in tir and "bar_kv_full" in tir
    # causal block skipping (HCA): the key-block loops run to the runtime bound; an indexer's full lists keep
    # the compile-time trip count; window-only reads no list and loops over its CTA's span of queries (the
    # persistent ring kernel)
    assert bool(re.search(r"for \(int it = 0; it < min\(", cuda)) == (spec.layer == "hca")
    assert ("const int* __restrict__ Indices" in cuda) == (spec.layer != "window")
    assert bool(re.search(r"for \(int i = 0; i < min\(span,", cuda)) == (spec.layer == "window")

    # compressor and RoPE: one file per compressor, or a note that there is no kernel
    parts = [p for p, c in (("kv", spec.compressor), ("idx", getattr(spec.indexer, "compressor", None))) if c]
    if not parts:
        for lv in ("ttir", "ttgir", "llir", "ptx"):
            assert "no compressor kernel" in _read(d, preset, f"compressor.{lv}")
    else:
        for part in parts:
            assert ".version" in _read(d, preset, f"compressor-{part}.ptx")
            assert "tt.func" in _read(d, preset, f"compressor-{part}.ttgir")
    if spec.attention.inverse_rope is None:
        for lv in ("ttir", "ttgir", "llir", "ptx"):
            assert "no inverse RoPE" in _read(d, preset, f"rope.{lv}")
    else:
        assert ".version" in _read(d, preset, "rope.ptx")

    assert str(spec).splitlines()[0] in _read(d, preset, "pipeline.spec")


def test_ir_plan_v4_flash_262144(ir_dirs):
    plan = _read(ir_dirs["v4-flash"], "v4-flash", "pipeline.plan")
    assert "for s0 in range(0, S, C):  # 128 query chunks" in plan and "C = 2,048" in plan
    assert not re.search(r"^\s*\w+\s+\w+\[1?x?262144x65536\]", plan, re.M), "an [S, T] buffer is planned"
    assert "262144x65536" not in plan
    # the materialising schedule's bytes next to this program's
    assert "a materialising schedule would need" in plan
    assert "4.00 TiB" in plan and "64.00 GiB" in plan and "this program (workspace + transient)" in plan
    assert "fused stage boundaries" in plan
    assert "indexer.score_fp8@cuda" in plan and "attention.attend@cuda" in plan
    assert "quant.rows@cuda" in plan and "quant.pack_keys@cuda" in plan and "E4M3 step fused" in plan


# ---------------------------------------------------------------------------------------
# quick levels, in-process
def test_ir_spec_json_roundtrip(capsys):
    for p in PRESETS:
        rc, out, err = _main(capsys, "ir", p, "--level", "spec", "--json")
        assert rc == 0, err
        assert csa_dsl.Pipeline.from_json(out) == csa_dsl.preset(p)


def test_ir_plan_json(capsys):
    rc, out, err = _main(capsys, "ir", "v4-flash", "--level", "plan", "--seq", "65536", "--json")
    assert rc == 0, err
    prog = json.loads(out)
    assert prog["consts"]["S"] == 65536 and prog["materialize_bytes"] and prog["workspace_bytes"]
    assert csa_dsl.Program.from_dict(prog).to_dict() == prog          # the JSON is the program


def test_score_rounding_option(capsys):
    """--score-rounding bf16 replaces the spec's Indexer.score_rounding: the plan's score call then rounds; a
    pipeline without a lightning indexer refuses it, saying why. --fp8-mma sets Indexer.fp8_mma."""
    rc, out, err = _main(capsys, "ir", "v4-flash", "--level", "plan", "--seq", "65536", "--score-rounding", "bf16",
                         "--json")
    assert rc == 0, err
    prog = csa_dsl.Program.from_dict(json.loads(out))
    calls = [c for c in walk_calls(prog.body) if c.op == "indexer.score_fp8"]
    assert len(calls) == 1 and calls[0].args["round_bf16"] is True
    rc, out, err = _main(capsys, "ir", "v4-flash", "--level", "spec", "--score-rounding", "bf16", "--json")
    assert rc == 0 and csa_dsl.Pipeline.from_json(out).indexer.score_rounding == "bf16", err
    for name, why in (("v4-flash-hca", "no indexer (a HCA layer)"), ("v4-flash-selfindex", "a self-index")):
        rc, out, err = _main(capsys, "ir", name, "--level", "spec", "--score-rounding", "bf16")
        assert rc == 2 and "score_rounding is the lightning indexer's" in err and why in err, err
    rc, out, err = _main(capsys, "ir", "v4-flash", "--level", "spec", "--score-rounding", "fp16")
    assert rc == 2 and "fp16" in err and "bf16" in err and "fp32" in err, err
    # --fp8-mma: V3.2's e4m3 operands on FP8 tensor cores; V4's FP4 ones are there anyway
    rc, out, err = _main(capsys, "ir", "v3.2", "--level", "plan", "--seq", "131072", "--fp8-mma", "--json")
    assert rc == 0 and {b["name"]: b["dtype"] for b in json.loads(out)["buffers"]}["k8"] == "fp8e4m3", err
    rc, out, err = _main(capsys, "ir", "v4-flash", "--level", "spec", "--fp8-mma")
    assert rc == 2 and "FP4 operands multiply on FP8 tensor cores anyway" in err, err


def test_ir_list(capsys):
    rc, out, err = _main(capsys, "ir", "--list")
    assert rc == 0, err
    for word in ("compressor", "indexer", "topk", "attention", "rope", "triton", "tilelang",
                 "ttir", "ttgir", "llir", "ptx", "tir", "cuda", "spec", "plan", "all"):
        assert word in out, f"--list does not mention {word!r}"


@pytest.mark.parametrize("argv, words", [
    (["v4-flash", "--level", "sass"], ["unknown level 'sass'", "ttgir", "cuda", "all"]),
    (["v4-flash", "--level", "ttgir", "--stage", "softmax"], ["unknown stage 'softmax'", "indexer", "attention"]),
    (["v5-ultra", "--level", "spec"], ["unknown preset 'v5-ultra'", "v4-flash", "v4-pro", "v3.2"]),
    (["v4-flash", "--stage", "attention", "--level", "ptx"], ["has no level 'ptx'", "tir", "cuda"]),
    (["v4-flash", "--stage", "indexer", "--level", "cuda"], ["has no level 'cuda'", "ttgir", "ptx"]),
    (["v4-flash"], ["pass --level", "ttgir"]),
    ([], ["name a preset", "v4-flash"]),
])
def test_ir_errors(capsys, argv, words):
    rc, out, err = _main(capsys, "ir", *argv)
    assert rc == 2, (out, err)
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"


def test_ir_spec_file_without_pipeline(capsys, tmp_path):
    f = tmp_path / "empty_spec.py"
    f.write_text("import csa_dsl\nx = 1\n")
    rc, out, err = _main(capsys, "ir", str(f), "--level", "spec")
    assert rc == 2
    assert "defines no pipeline" in err and "`pipeline`" in err
    rc, out, err = _main(capsys, "ir", str(tmp_path / "missing.py"), "--level", "spec")
    assert rc == 2 and "does not exist" in err


def test_ir_custom_spec_file(capsys, tmp_path):
    f = tmp_path / "flash_h32.py"
    f.write_text("import dataclasses\n"
                 "import csa_dsl\n"
                 "base = csa_dsl.preset('v4-flash')\n"
                 "pipeline = base.replace(name='flash-h32', attention=dataclasses.replace(base.attention, heads=32))\n")
    rc, out, err = _main(capsys, "ir", str(f), "--level", "spec", "--json")
    assert rc == 0, err
    spec = csa_dsl.Pipeline.from_json(out)
    assert spec.name == "flash-h32" and spec.attention.heads == 32
    rc, out, err = _main(capsys, "ir", str(f), "--level", "plan", "--seq", "16384")
    assert rc == 0, err
    assert "32 heads" in out and "flash-h32" in out
    # a Triton kernel of the custom spec; in-process, under TRITON_INTERPRET=1 (CPU test
    # runs) the Triton part is compiled in one child process
    out_dir = tmp_path / "ir"
    rc, out, err = _main(capsys, "ir", str(f), "--level", "ttgir", "--stage", "rope", "-o", str(out_dir))
    assert rc == 0, err
    ttgir = (out_dir / "flash-h32.rope.ttgir").read_text()
    assert "tt.func" in ttgir and "ttg.num-warps" in ttgir


def test_ir_plan_context_parallel(capsys):
    rc, out, err = _main(capsys, "ir", "v4-flash", "--level", "plan", "--nproc", "4", "--rank", "2")
    assert rc == 0, err
    assert "[rank 2 of 4]" in out and "cp.all_gather@cuda" in out and "rank 3: blocks" in out
    rc, out, err = _main(capsys, "ir", "v4-flash", "--level", "plan", "--nproc", "4", "--rank", "4")
    assert rc == 2 and "--rank must be in [0, --nproc = 4)" in err


# ---------------------------------------------------------------------------------------
# every error a user can make on the command line: one line, exit code 2, nothing launched
@pytest.mark.parametrize("argv, words", [
    (["run", "v4-flash", "--seq", "0"], ["--seq must be >= 1"]),
    (["run", "v4-flash", "--reps", "0"], ["--reps must be >= 1"]),
    (["run", "v4-flash", "--nproc", "0"], ["--nproc must be >= 1"]),
    (["run", "v4-flash", "--batch", "-1"], ["--batch must be >= 1"]),
    (["run", "v4-flash", "--budget", "lots"], ["cannot read a byte size"]),
    (["run", "v4-flash", "--path", "fast"], ["invalid choice: 'fast'"]),
    (["bench", "compressor"], ["invalid choice: 'compressor'"]),
    (["ir", "v4-flash", "--level", "plan", "--seq", "0"], ["--seq must be >= 1"]),
])
def test_cli_argument_errors_are_one_line(capsys, argv, words):
    rc, out, err = _main(capsys, *argv)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("csa-dsl: error:"), err
    for w in words:
        assert w in err, (w, err)


def test_bench_help_lists_what_exists(capsys):
    rc, out, err = _main(capsys, "bench", "--help")
    assert rc == 0 and "compressor" not in out and "indexer | attention | composed" in _main(capsys, "--help")[1]


@pytest.mark.parametrize("body, words", [
    ("import csa_dsl\npipeline = csa_dsl.preset('v4-flash'\n", ["broken_spec.py:", "SyntaxError"]),
    ("import csa_dsl\nimport not_a_module_xyz\n", ["broken_spec.py:2: ModuleNotFoundError",
                                                      "not_a_module_xyz"]),
    ("import csa_dsl\npipeline = csa_dsl.Indexer(heads=0)\n", ["broken_spec.py", "Indexer.heads must be >= 1"]),
])
def test_spec_file_errors_are_one_line(capsys, tmp_path, body, words):
    f = tmp_path / "broken_spec.py"
    f.write_text(body)
    for argv in (["ir", str(f), "--level", "spec"], ["run", str(f), "--seq", "64"]):
        rc, out, err = _main(capsys, *argv)
        assert rc == 2, (out, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("csa-dsl: error:"), err
        for w in words:
            assert w in err, (w, err)


@pytest.mark.parametrize("body, words", [
    ("pipeline = base.replace(indexer=dataclasses.replace(base.indexer, topk=100000))",
     ["indexer topk = 100000", "takes 1..8192"]),
    ("pipeline = base.replace(attention=dataclasses.replace(base.attention, qk_dim=256, v_dim=256, "
     "inverse_rope=None, kv_quant=None), compressor=dataclasses.replace(base.compressor, dim=256))",
     ["dim_qk (last dim of q and kv) in (512, 576), got 256", "pad q and kv"]),
])
def test_ir_refuses_unsupported_specs_fast(tmp_path, clean_env, body, words):
    """Sizes the kernels cannot take are refused before anything is compiled (no traceback, no hang)."""
    import time
    f = tmp_path / "too_big.py"
    f.write_text("import dataclasses\nimport csa_dsl\nbase = csa_dsl.preset('v4-flash')\n" + body + "\n")
    t = time.time()
    rc, out, err = _run(_csa_dsl_cmd() + ["ir", str(f), "--level", "all"], clean_env, timeout=120)
    assert rc == 2, (out, err)
    assert time.time() - t < 60
    assert len(err.strip().splitlines()) == 1 and "csa-dsl: error:" in err, err
    for w in words:
        assert w in err, (w, err)


def test_indexer_heads_and_dims_users_want_compile(capsys, tmp_path):
    """Indexer(heads=48) and dim=96 run on the kernels (padded inside), so their IR compiles."""
    f = tmp_path / "odd_indexer.py"
    f.write_text("import dataclasses\nimport csa_dsl\nbase = csa_dsl.preset('v4-flash')\n"
                 "ic = dataclasses.replace(base.indexer.compressor, dim=96, hadamard=False)\n"
                 "pipeline = base.replace(name='odd', indexer=dataclasses.replace(base.indexer, heads=48, dim=96, "
                 "compressor=ic))\n")
    out_dir = tmp_path / "ir"
    rc, out, err = _main(capsys, "ir", str(f), "--level", "ttgir", "--stage", "indexer", "-o", str(out_dir))
    assert rc == 0, err
    assert "warp_group_dot" in (out_dir / "odd.indexer.ttgir").read_text()


def test_run_reference_budget_and_progress(clean_env):
    """--budget bounds the reference path's plan too, and the CPU run shows a progress bar."""
    rc, out, err = _run(_csa_dsl_cmd() + ["run", "v3.2", "--seq", "512", "--reps", "1", "--budget", "300MiB"],
                        clean_env)
    assert rc == 0, err
    assert "budget 300.00 MiB" in out, out
    assert "chunk" in err and "v3.2 S=512" in err, err       # tqdm writes the bar to stderr
    rc, out, err = _run(_csa_dsl_cmd() + ["run", "v3.2", "--seq", "512", "--budget", "1MiB"], clean_env)
    assert rc == 2 and "csa-dsl: error: no plan for 'v3.2'" in err and "raise the budget" in err, err


def test_run_varlen_and_its_errors(capsys, tmp_path):
    """`run --varlen L1,L2,...` runs a packed batch (here on the CPU reference) and records the lengths; bad
    combinations are one-line errors."""
    out_json = tmp_path / "r.json"
    rc, out, err = _main(capsys, "run", "v3.2", "--varlen", "100,0,37,130", "--reps", "1", "--json", str(out_json))
    assert rc == 0, err
    assert "packed batch: 4 sequences of 100, 0, 37, 130 tokens (267 in all, the longest 130)" in out, out
    assert "out (267, 128, 512)" in out and "NaN 0" in out, out
    rec = json.loads(out_json.read_text())[0]
    assert rec["bench"] == "run-varlen" and rec["lengths"] == [100, 0, 37, 130] and rec["seq_len"] == 267
    rc, out, err = _main(capsys, "run", "v3.2", "--varlen", "100,37", "--seq", "512")
    assert rc == 2 and "drop --seq" in err, err
    rc, out, err = _main(capsys, "run", "v3.2", "--varlen", "0,0")
    assert rc == 2 and "at least one token" in err, err
