"""The Program: what a compiled pipeline runs, as data.

A Program is buffers, calls and loops. Every call names its op (a registry entry's op, e.g.
`indexer.score`), the backend implementation that runs it (`cuda`, `interpret`, `torch`),
and explicit arguments: buffer slices it reads and writes (`Ref`, e.g. `idx_q[b, s0:s1]`),
integer expressions of the loop variables and the program's constants (`Expr`, e.g. `s0`),
and plain constants. `str(program)` prints exactly that text (Halide's print_loop_nest is
the model), `to_dict()` / `from_dict()` round-trip it, and pipeline.interpreter runs it:
the printed program is the program that runs, and a user can edit one and run it.

Expressions are a small, safe subset of Python: names, integers, + - * // %, unary minus,
min(...) and max(...); a Ref is `buffer` or `buffer[index, ...]` with such expressions
and slices as indices. Each is parsed once and compiled to a closure.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch

from .lang.errors import SpecError

SCOPES = ("input", "output", "program", "chunk")
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "i32": torch.int32, "i64": torch.int64,
           "u8": torch.uint8, "fp8e4m3": torch.float8_e4m3fn}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


def fmt_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} PiB"


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


# ---------------------------------------------------------------------------------------
# expressions and buffer references
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Mod: "%"}
_FUNCS = ("min", "max")


def _check_expr(node: ast.AST, text: str) -> None:
    """Raise unless `node` is in the expression subset."""
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check_expr(node.left, text)
        _check_expr(node.right, text)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        _check_expr(node.operand, text)
        return
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and node.args and not node.keywords):
        for a in node.args:
            _check_expr(a, text)
        return
    raise SpecError(f"program expression {text!r}: {ast.unparse(node)!r} is not allowed (names, integers, "
                    f"+ - * // %, min(), max())")


def _names(node: ast.AST) -> List[str]:
    return sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id not in _FUNCS})


def _compile(tree: ast.expression, text: str) -> Callable[[dict], Any]:
    code = compile(tree, f"<program: {text}>", "eval")
    names = _names(tree)

    def run(env: dict):
        try:
            scope = {n: env[n] for n in names}
        except KeyError as e:
            raise SpecError(f"program expression {text!r}: {e.args[0]!r} is not defined here "
                            f"(loop variables, bound names and the program's constants are)") from None
        scope.update(min=min, max=max)
        return eval(code, {"__builtins__": {}}, scope)
    return run


class _Source:
    """Program text parsed once into a closure over the environment; compares and prints as its text."""

    __slots__ = ("text", "_run")
    KIND = "?"

    def eval(self, env: dict):
        return self._run(env)

    def __repr__(self) -> str:
        return f"{self.KIND}({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.text == self.text

    def __hash__(self) -> int:
        return hash((self.KIND, self.text))

    def _parse(self, text: str, what: str) -> ast.expression:
        self.text = str(text).strip()
        try:
            return ast.parse(self.text, mode="eval")
        except SyntaxError as e:
            raise SpecError(f"{what} {self.text!r} does not parse: {e.msg}") from None


class Expr(_Source):
    """An integer expression of loop variables and program constants, e.g. `min(s0 + C, S)`."""

    __slots__ = ()
    KIND = "E"

    def __init__(self, text: str):
        tree = self._parse(text, "program expression")
        _check_expr(tree.body, self.text)
        self._run = _compile(tree, self.text)


class Ref(_Source):
    """A buffer or a slice of one, e.g. `idx_q[b, s0:s1]` or `kv_all[:, S:S + T]`."""

    __slots__ = ("buffer",)
    KIND = "R"

    def __init__(self, text: str):
        tree = self._parse(text, "buffer reference")
        node = tree.body
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            self.buffer = node.value.id
            items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            for it in items:
                if isinstance(it, ast.Slice):
                    for part in (it.lower, it.upper):
                        if part is not None:
                            _check_expr(part, self.text)
                    if it.step is not None:
                        raise SpecError(f"buffer reference {self.text!r}: slices take no step")
                else:
                    _check_expr(it, self.text)
        elif isinstance(node, ast.Name):
            self.buffer = node.id
        else:
            raise SpecError(f"buffer reference {self.text!r} must be `name` or `name[index, ...]`")
        self._run = _compile(tree, self.text)


Arg = Union[Ref, Expr, int, float, bool, str, None, tuple]


# ---------------------------------------------------------------------------------------
# nodes
@dataclass
class Buffer:
    """A tensor the program reads or allocates. `scope`: input (the caller's) | output (allocated,
    returned) | program (lives for the whole forward) | chunk (reused by every loop iteration)."""

    name: str
    shape: Tuple[int, ...]
    dtype: torch.dtype
    scope: str
    note: str = ""

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        if self.scope not in SCOPES:
            raise SpecError(f"buffer {self.name!r}: scope {self.scope!r} is not one of {SCOPES}")

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty(0, dtype=self.dtype).element_size()

    def describe(self) -> str:
        return f"{self.name}[{'x'.join(str(d) for d in self.shape)}] {dtype_name(self.dtype)}"


@dataclass
class Call:
    """One op of a stage on one backend: `op` names the registry's op, `impl` the backend whose
    function runs it, `args` its explicit arguments (Refs, Exprs, constants, None for an absent
    optional tensor); `writes` lists the argument names it writes, `updates` those of them it reads
    first. `temp_bytes`: what the call allocates for itself while it runs. `stream`: the CUDA stream
    it is issued on ('' the caller's; a named one is the program's own side stream, ordered against
    the other streams' calls through the buffer ranges each reads and writes: pipeline/streams.py)."""

    op: str
    impl: str
    args: Dict[str, Arg]
    writes: Tuple[str, ...]
    note: str = ""
    temp_bytes: int = 0
    updates: Tuple[str, ...] = ()      # written arguments that are read first (in place)
    stream: str = ""

    def refs(self) -> Iterator[Tuple[str, Ref]]:
        for k, v in self.args.items():
            if isinstance(v, Ref):
                yield k, v


@dataclass
class Loop:
    """for var in range(start, stop, step), with `bind` names (e.g. s1 = min(s0 + C, S)) set per
    iteration. `progress`: the loop a progress bar counts."""

    var: str
    start: Expr
    stop: Expr
    step: Expr
    body: List["Node"]
    bind: Dict[str, Expr] = field(default_factory=dict)
    note: str = ""
    progress: bool = False


Node = Union[Loop, Call]


@dataclass
class Program:
    """A composed forward: constants, buffers, a body of calls and loops, and what the planner decided.

    `outputs`: the buffers returned, in order. `kernels`: "op@impl" -> the kernel that runs it (for
    printing). `notes`: fused stage boundaries, decisions and the bytes a materialising schedule
    would need, as printed. `budget`: the memory budget it was planned for."""

    name: str
    consts: Dict[str, Any]
    buffers: Dict[str, Buffer]
    body: List[Node]
    outputs: Tuple[str, ...]
    kernels: Dict[str, str] = field(default_factory=dict)
    notes: Dict[str, List[str]] = field(default_factory=dict)
    materialize_bytes: Dict[str, int] = field(default_factory=dict)
    budget: Optional[int] = None

    # -- accessors -------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return int(self.consts.get("B", 1))

    @property
    def seq_len(self) -> int:
        return int(self.consts["S"])

    @property
    def chunk(self) -> int:
        return int(self.consts.get("C", self.seq_len))

    @property
    def streams(self) -> Tuple[str, ...]:
        """The side streams the program's calls are issued on ('', the caller's stream, is not listed)."""
        return tuple(sorted({c.stream for c in self.calls() if c.stream}))

    def calls(self) -> List[Call]:
        out: List[Call] = []

        def walk(nodes):
            for n in nodes:
                if isinstance(n, Loop):
                    walk(n.body)
                else:
                    out.append(n)
        walk(self.body)
        return out

    # -- accounting -----------------------------------------------------------------
    def bytes_by_scope(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for b in self.buffers.values():
            out[b.scope] = out.get(b.scope, 0) + b.nbytes
        return out

    @property
    def workspace_bytes(self) -> int:
        """Buffers the forward allocates beyond its inputs and outputs."""
        s = self.bytes_by_scope()
        return s.get("program", 0) + s.get("chunk", 0)

    @property
    def transient_bytes(self) -> int:
        """The most any one call allocates for itself while it runs (calls run one after another)."""
        return max((c.temp_bytes for c in self.calls()), default=0)

    @property
    def peak_bytes(self) -> int:
        """What the forward holds at most beyond its inputs and outputs: the plan's memory bound."""
        return self.workspace_bytes + self.transient_bytes

    # -- printing -------------------------------------------------------------------
    def __str__(self) -> str:
        c = self.consts
        head = ", ".join(f"{k} = {v:,}" for k, v in c.items() if isinstance(v, int) and not isinstance(v, bool))
        lines = [f"program {self.name!r}: {head}"]
        other = {k: v for k, v in c.items() if not (isinstance(v, int) and not isinstance(v, bool))}
        for k, v in other.items():
            lines.append(f"  {k} = {_fmt_const(v)}")
        lines += ["", "buffers:"]
        w = max((len(b.describe()) for b in self.buffers.values()), default=0)
        for scope in SCOPES:
            for b in self.buffers.values():
                if b.scope == scope:
                    note = f"  # {b.note}" if b.note else ""
                    lines.append(f"  {scope:<8} {b.describe():<{w}}  {fmt_bytes(b.nbytes):>11}{note}")
        sc = self.bytes_by_scope()
        big = max(self.calls(), key=lambda x: x.temp_bytes, default=None)
        lines.append(f"  workspace beyond inputs+outputs: {fmt_bytes(self.workspace_bytes)} "
                     f"(program {fmt_bytes(sc.get('program', 0))}, per-chunk {fmt_bytes(sc.get('chunk', 0))})")
        lines.append(f"  transient inside calls: up to {fmt_bytes(self.transient_bytes)}"
                     + (f" ({big.op}@{big.impl})" if big is not None and big.temp_bytes else ""))
        lines.append(f"  peak beyond inputs+outputs: {fmt_bytes(self.peak_bytes)}"
                     + (f"; budget {fmt_bytes(self.budget)}" if self.budget else ""))
        lines += ["", "loop nest:"]
        self._emit(self.body, 1, lines)
        for title, items in self.notes.items():
            lines += ["", f"{title}:"] + [f"  - {x}" for x in items]
        if self.materialize_bytes:
            lines += ["", "a materialising schedule would need (beyond inputs):"]
            for k, v in self.materialize_bytes.items():
                lines.append(f"  {k:<44} {fmt_bytes(v):>11}")
            lines.append(f"  {'this program (workspace + transient)':<44} {fmt_bytes(self.peak_bytes):>11}")
        return "\n".join(lines)

    def _emit(self, nodes: List[Node], depth: int, lines: List[str]) -> None:
        pad = "  " * depth
        for n in nodes:
            if isinstance(n, Loop):
                note = f"  # {n.note}" if n.note else ""
                lines.append(f"{pad}for {n.var} in range({n.start}, {n.stop}, {n.step}):{note}")
                for k, v in n.bind.items():
                    lines.append(f"{pad}  {k} = {v}")
                self._emit(n.body, depth + 1, lines)
            else:
                written = [k for k in n.writes if n.args.get(k) is not None]
                outs = ", ".join(str(n.args[k]) for k in written)
                # an argument written in place is read too: shown on both sides
                ins = ", ".join(f"{k}={_fmt_arg(v)}" for k, v in n.args.items()
                                if (k not in n.writes or k in n.updates) and v is not None)
                kern = self.kernels.get(f"{n.op}@{n.impl}", "")
                note = "  # " + "; ".join(x for x in (kern, n.note) if x) if (kern or n.note) else ""
                on = f"[stream {n.stream}] " if n.stream else ""
                lines.append(f"{pad}{on}{outs} <- {n.op}@{n.impl}({ins}){note}")

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        def node(n):
            if isinstance(n, Loop):
                return {"loop": n.var, "start": n.start.text, "stop": n.stop.text, "step": n.step.text,
                        "bind": {k: v.text for k, v in n.bind.items()}, "note": n.note, "progress": n.progress,
                        "body": [node(x) for x in n.body]}
            return {"op": n.op, "impl": n.impl, "args": {k: _arg_to_json(v) for k, v in n.args.items()},
                    "writes": list(n.writes), "updates": list(n.updates), "note": n.note,
                    "temp_bytes": n.temp_bytes, "stream": n.stream}
        return {
            "name": self.name, "consts": {k: _arg_to_json(v) for k, v in self.consts.items()},
            "buffers": [{"name": b.name, "shape": list(b.shape), "dtype": dtype_name(b.dtype), "scope": b.scope,
                         "bytes": b.nbytes, "note": b.note} for b in self.buffers.values()],
            "body": [node(n) for n in self.body], "outputs": list(self.outputs), "kernels": self.kernels,
            "notes": self.notes, "materialize_bytes": self.materialize_bytes, "budget": self.budget,
            "workspace_bytes": self.workspace_bytes, "transient_bytes": self.transient_bytes,
            "peak_bytes": self.peak_bytes,
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **({"indent": 1} | kw))

    @classmethod
    def from_dict(cls, d: dict) -> "Program":
        def node(x):
            if "loop" in x:
                return Loop(x["loop"], Expr(x["start"]), Expr(x["stop"]), Expr(x["step"]),
                            [node(y) for y in x["body"]], {k: Expr(v) for k, v in x.get("bind", {}).items()},
                            x.get("note", ""), x.get("progress", False))
            return Call(x["op"], x["impl"], {k: _arg_from_json(v) for k, v in x["args"].items()},
                        tuple(x["writes"]), x.get("note", ""), x.get("temp_bytes", 0), tuple(x.get("updates", ())),
                        x.get("stream", ""))
        bufs = {}
        for b in d["buffers"]:
            if b["dtype"] not in _DTYPES:
                raise SpecError(f"buffer {b['name']!r}: unknown dtype {b['dtype']!r}; valid: {sorted(_DTYPES)}")
            bufs[b["name"]] = Buffer(b["name"], tuple(b["shape"]), _DTYPES[b["dtype"]], b["scope"], b.get("note", ""))
        return cls(d["name"], {k: _arg_from_json(v) for k, v in d["consts"].items()}, bufs,
                   [node(n) for n in d["body"]], tuple(d["outputs"]), dict(d.get("kernels", {})),
                   dict(d.get("notes", {})), dict(d.get("materialize_bytes", {})), d.get("budget"))

    @classmethod
    def from_json(cls, s: str) -> "Program":
        return cls.from_dict(json.loads(s))


def _fmt_const(v) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple) and hasattr(v, "_fields"):      # a NamedTuple of plain kernel parameters
        return f"{type(v).__name__}({', '.join(f'{k}={_fmt_const(x)}' for k, x in zip(v._fields, v))})"
    return repr(v)


def _fmt_arg(v) -> str:
    if isinstance(v, (Ref, Expr)):
        return str(v)
    return _fmt_const(v)


# plain-parameter tuples a program may hold as constants (kernel parameter types, registered by
# the stage entries so that a program's JSON names them and can rebuild them)
PARAM_TYPES: Dict[str, type] = {}


def register_param_type(t: type) -> type:
    PARAM_TYPES[t.__name__] = t
    return t


def _arg_to_json(v):
    if isinstance(v, Ref):
        return {"ref": v.text}
    if isinstance(v, Expr):
        return {"expr": v.text}
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return {"params": type(v).__name__, "values": [_arg_to_json(x) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [_arg_to_json(x) for x in v]}
    return v


def _arg_from_json(v):
    if isinstance(v, dict):
        if "ref" in v:
            return Ref(v["ref"])
        if "expr" in v:
            return Expr(v["expr"])
        if "params" in v:
            t = PARAM_TYPES.get(v["params"])
            if t is None:
                raise SpecError(f"unknown parameter type {v['params']!r}; known: {sorted(PARAM_TYPES)}")
            return t(*[_arg_from_json(x) for x in v["values"]])
        if "tuple" in v:
            return tuple(_arg_from_json(x) for x in v["tuple"])
    return v


# short constructors the composer uses
def R(text: str) -> Ref:
    return Ref(text)


def E(text) -> Expr:
    return Expr(str(text))
