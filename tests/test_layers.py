"""The import graph reads top-down: language -> kernels -> stages/composer/planner/interpreter -> front end.

Every project module's imports are read with `ast` (no import executed): none may reach a higher
layer, the packages form no cycle, and no project module is imported inside a function (optional
heavy dependencies such as tilelang may be).
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pipeline", "kernels_triton", "kernels_tilelang", "csa_dsl")

# layer of a module by its dotted name (the longest matching prefix wins)
LAYERS = {
    "pipeline.lang": 0,            # the language: imports nothing of the project
    "kernels_triton": 1,           # kernels: plain sizes, no spec objects
    "kernels_tilelang": 1,
    "pipeline": 2,                 # stage registry, program, composer, planner, interpreter
    "csa_dsl": 3,                  # the front end: compile, CLI, IR printing, benchmarks
}


def layer(mod: str) -> int:
    best = max((p for p in LAYERS if mod == p or mod.startswith(p + ".")), key=len)
    return LAYERS[best]


def package(mod: str) -> str:
    return "pipeline.lang" if mod.startswith("pipeline.lang") else mod.split(".")[0]


def modules():
    for pkg in PACKAGES:
        for d, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    yield (rel[:-9] if rel.endswith(".__init__") else rel), path


def imports(mod: str, path: str):
    """(imported project module, inside a function?) for every import of the file."""
    tree = ast.parse(open(path).read())
    is_pkg = path.endswith("__init__.py")
    out = []

    def visit(node, in_fn):
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = mod.split(".")
                    base = base if is_pkg else base[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                names = [target]
            else:
                visit(child, fn)
                continue
            for n in names:
                if n and n.split(".")[0] in PACKAGES:
                    out.append((n, in_fn))
    visit(tree, False)
    return out


def test_no_import_runs_up_a_layer():
    bad = []
    for mod, path in modules():
        for target, _ in imports(mod, path):
            if layer(target) > layer(mod):
                bad.append(f"{mod} (layer {layer(mod)}) imports {target} (layer {layer(target)})")
    assert not bad, "\n".join(bad)


def test_no_cycle_between_packages():
    edges = {}
    for mod, path in modules():
        for target, _ in imports(mod, path):
            a, b = package(mod), package(target)
            if a != b:
                edges.setdefault(a, set()).add(b)
    seen, stack = set(), set()

    def dfs(n, trail):
        if n in stack:
            raise AssertionError(f"package cycle: {' -> '.join(trail + [n])}")
        if n in seen:
            return
        seen.add(n)
        stack.add(n)
        for m in edges.get(n, ()):
            dfs(m, trail + [n])
        stack.discard(n)
    for n in list(edges):
        dfs(n, [])


def test_no_project_import_inside_a_function():
    bad = [f"{mod} imports {target} inside a function" for mod, path in modules()
           for target, in_fn in imports(mod, path) if in_fn]
    assert not bad, "\n".join(bad)


def test_kernels_take_no_spec_objects():
    """The kernel folders never import the language (plain sizes in)."""
    bad = [f"{mod} imports {t}" for mod, path in modules() if mod.startswith("kernels_")
           for t, _ in imports(mod, path) if t.startswith(("pipeline", "csa_dsl"))]
    assert not bad, "\n".join(bad)


def test_every_stage_kind_has_its_folder_and_every_backend():
    """Each kernel-backed op of the registry names an implementation for every backend, and each
    kernel folder has its naive.py reference beside the kernel, its cost model and its IR emitter."""
    from pipeline.stages import BACKENDS, OPS
    for name, op in OPS.items():
        assert set(op.impls) == set(BACKENDS), (name, sorted(op.impls))
    for folder in ("kernels_triton/indexer", "kernels_triton/compressor", "kernels_triton/rope",
                   "kernels_tilelang/sparse_mla"):
        for f in ("naive.py", "kernel.py", "cost.py", "ir.py"):
            assert os.path.exists(os.path.join(ROOT, folder, f)), f"{folder}/{f}"
