"""Issue 31: bytes moved per kernel, from XLA's optimized HLO (the JAX profiler attaches no byte counts on GPU).

For every instruction of an optimized (after-optimizations) HLO module that becomes a kernel or library call
(fusion, custom-call such as a cuBLAS GEMM, copy, scatter, sort, ...), in every computation of the module (the
entry, and the bodies and conditions of while loops: the MD scan body), the estimate is

    bytes = size of the result shape(s) + sizes of the operand shapes

that is, each operand read once in full and the result written once: the minimal-traffic accounting of XLA's own
cost model (HloCostAnalysis' "bytes accessed" for an elementwise op or a fusion; the sum over a small module equals
``compiled.cost_analysis()["bytes accessed"]`` on CPU, gathers and scatters included, see ``--self-test``). It
lacks the refinements of XLA's GPU cost model for operands read only in part (slices, gathers, dynamic-slice
fusions) and for in-place updates (dynamic-update-slice and scatter count the whole buffer), so it is above the
true traffic for those, and it knows nothing of caches
(an operand re-read from L2 counts once; an operand that does not fit and is re-read from DRAM also counts once).
A cuBLAS custom-call's workspace output (the trailing s8/u8 buffer of its result tuple) is left out.

Instruction names are unique in a module. Kernel names in a GPU trace are the names of fusions with "." and "-"
replaced by "_" (``input_scatter_fusion.93`` -> ``input_scatter_fusion_93``), so lookups try the exact name, then
the normalised one. Library kernels (cuBLAS / cutlass GEMMs, memcpy) carry library names: they are matched through
the event's ``hlo_op`` statistic when the profiler attaches one, and are left without bytes otherwise.

    python benchmarks/hlo_bytes.py --self-test          # the shape parser and a check against cost_analysis
    python benchmarks/hlo_bytes.py MODULE.txt [--top 20] # the largest kernels of a dumped module, by bytes
"""

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DTYPE_BITS = {"pred": 8, "s2": 2, "u2": 2, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "s16": 16, "u16": 16, "s32": 32,
              "u32": 32, "s64": 64, "u64": 64, "f16": 16, "bf16": 16, "f32": 32, "f64": 64, "c64": 64, "c128": 128,
              "tf32": 32, "token": 0, "opaque": 0}
# opcodes that launch nothing (or only contain other instructions): no bytes of their own
NO_KERNEL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "conditional", "call",
             "after-all", "add-dependency", "opt-barrier", "domain", "partition-id", "replica-id", "iota-free",
             "get-dimension-size", "set-dimension-size"}
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\]")
_COMP = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s*([a-z][\w\-]*)\(")
_CALLS = re.compile(r"\bcalls=%?([\w.\-]+)")
_TO_APPLY = re.compile(r"\bto_apply=%?([\w.\-]+)")
_COMMENT = re.compile(r"/\*.*?\*/")
_TARGET = re.compile(r'custom_call_target="([^"]*)"')


def dtype_bits(dtype: str) -> int:
    """Bits of one element of an HLO primitive type (f8e4m3fn: 8, unknown names: the digits in them, else 0)."""
    if dtype in DTYPE_BITS:
        return DTYPE_BITS[dtype]
    m = re.match(r"[a-z]+?(\d+)", dtype)
    return int(m.group(1)) if m else 0


def array_sizes(shape: str) -> list[int]:
    """Byte size of each array in an HLO shape string: ``f32[8,427,64]{2,1,0}`` -> [874496];
    a tuple ``(f32[2]{0}, s32[])`` -> [8, 4]; dynamic dimensions ``f32[<=8]`` count at their bound.

    >>> array_sizes("f32[8,427,64]{2,1,0}"), array_sizes("(f32[2]{0}, s32[], pred[3,3])"), array_sizes("bf16[<=8,2]")
    ([874496], [8, 4, 9], [32])
    """
    out = []
    for dtype, dims in _ARRAY.findall(shape):
        n = 1
        for d in dims.split(","):
            d = d.strip().lstrip("<=")
            if d:
                n *= int(d) if d.isdigit() else 0
        out.append((n * dtype_bits(dtype) + 7) // 8)
    return out


def shape_bytes(shape: str) -> int:
    """Total byte size of an HLO shape string (sum over the arrays of a tuple)."""
    return sum(array_sizes(shape))


def _matching(s: str, start: int) -> int:
    """Index just past the bracket that closes the one at ``s[start]`` (quoted strings skipped)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack, i = [], start
    while i < len(s):
        c = s[i]
        if c == '"':  # metadata, backend configs
            j = s.find('"', i + 1)
            while j > 0 and s[j - 1] == "\\":
                j = s.find('"', j + 1)
            if j < 0:
                return len(s)
            i = j + 1
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif stack and c == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1
        i += 1
    return len(s)


def _split_top(s: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


@dataclass
class Op:
    name: str
    opcode: str
    computation: str
    shape: str
    out_bytes: int
    in_bytes: int
    target: str = ""  # custom-call target

    @property
    def bytes(self) -> int:
        return self.out_bytes + self.in_bytes


@dataclass
class HloModule:
    """The kernel-like instructions of one optimized HLO module, keyed by name."""
    name: str
    ops: dict  # name -> Op
    n_instructions: int = 0
    path: str = ""
    id: "int | None" = None  # the dump's module number (the profiler's program_id)

    def __post_init__(self):
        self._norm = {}
        for name, op in self.ops.items():
            self._norm.setdefault(normalise(name), op)

    def lookup(self, name: str) -> "Op | None":
        """The op of an HLO name or a kernel name (exact, then with "." and "-" as "_"); None if unknown."""
        op = self.ops.get(name)
        if op is None:
            op = self._norm.get(normalise(name))
        return op


def normalise(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")


def parse_module(text: str, path: str = "") -> HloModule:
    """Parse the text of an optimized HLO module (``*after_optimizations.txt`` of ``--xla_dump_to`` or
    ``compiled.as_text()``). Operand shapes come from the defining instructions (the text may print operands
    with or without their shapes). Instructions of fused computations and of reducers (``calls=`` of a fusion,
    ``to_apply=`` of a reduce / scatter / sort ...) are not kernels and are left out."""
    module_name = ""
    comps: dict[str, list] = {}
    comp = None
    nested: set[str] = set()
    for line in text.splitlines():
        if line.startswith("HloModule "):
            module_name = line.split()[1].rstrip(",")
            continue
        if comp is None:
            m = _COMP.match(line)
            if m:
                comp = m.group(2)
                comps[comp] = []
            continue
        if line.strip() == "}":
            comp = None
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, rest = m.group(1), m.group(2)
        rest = rest.lstrip()
        if rest.startswith("("):
            end = _matching(rest, 0)
        else:
            end = len(rest.split(" ", 1)[0])
        shape, tail = rest[:end], rest[end:]
        om = _OPCODE.match(tail)
        if not om:
            continue
        opcode = om.group(1)
        start = om.end() - 1
        close = _matching(tail, start)
        operands = _COMMENT.sub(" ", tail[start + 1:close - 1])  # "/*index=5*/" before every fifth operand
        attrs = tail[close:]
        if opcode == "fusion":
            nested.update(_CALLS.findall(attrs))
        if opcode not in ("call",):
            nested.update(_TO_APPLY.findall(attrs))
        comps[comp].append((name, shape, opcode, operands, attrs))
    shapes = {name: shape for instrs in comps.values() for name, shape, *_ in instrs}
    ops = {}
    n = 0
    for cname, instrs in comps.items():
        n += len(instrs)
        if cname in nested:
            continue
        for name, shape, opcode, operands, attrs in instrs:
            if opcode in NO_KERNEL:
                continue
            sizes = array_sizes(shape)
            target = ""
            if opcode == "custom-call":
                tm = _TARGET.search(attrs)
                target = tm.group(1) if tm else ""
                arrays = _ARRAY.findall(shape)
                if (shape.startswith("(") and len(arrays) > 1 and arrays[-1][0] in ("s8", "u8")
                        and ("cublas" in target or "gemm" in target.lower() or "cudnn" in target)):
                    sizes = sizes[:-1]  # the library's scratch workspace
            in_bytes = 0
            if opcode != "constant":
                for operand in _split_top(operands):
                    tok = operand.strip().split()
                    if not tok:
                        continue
                    ref = tok[-1].lstrip("%")
                    if ref in shapes:
                        in_bytes += shape_bytes(shapes[ref])
                    else:
                        in_bytes += shape_bytes(operand)
            ops[name] = Op(name, opcode, cname, shape, sum(sizes), in_bytes, target)
    return HloModule(module_name, ops, n, path)


def dumped_modules(dump_dir) -> list[dict]:
    """The after-optimizations modules of an ``--xla_dump_to`` folder: [{id, name, path, size}], by id.
    File names: ``module_0694.jit_run_chunk.cpu_after_optimizations.txt`` (GPU: ``...sm_9.0_gpu_after_...``);
    the number is the module's unique id, the ``program_id`` the profiler attaches to its events."""
    out = []
    for p in sorted(Path(dump_dir).glob("module_*after_optimizations.txt")):
        m = re.match(r"module_(\d+)\.(.+?)\.(?:[\w.\-]*?_)?after_optimizations\.txt$", p.name)
        if not m:
            continue
        out.append(dict(id=int(m.group(1)), name=m.group(2).split(".")[0], path=str(p), size=p.stat().st_size))
    return out


class ModuleIndex:
    """Optimized HLO modules by the ``program_id`` the profiler attaches to events (the dump's module number),
    parsed on first use. Events without a usable ``program_id`` are looked up in ``default``: the module, among
    the largest few, whose instruction names cover most of the kernel time (:meth:`choose_default`)."""

    def __init__(self, entries: list[dict]):
        self.entries = list(entries)
        self.by_id = {e["id"]: e for e in self.entries if e.get("id") is not None}
        self._parsed = {}
        self.default = None
        self.errors = []

    @classmethod
    def from_paths(cls, paths) -> "ModuleIndex":
        """From a dump folder, or module files (``.txt`` or ``.txt.gz``; ids from ``module_NNNN`` names)."""
        entries = []
        for p in map(Path, paths):
            if p.is_dir():
                entries += dumped_modules(p)
                continue
            m = re.search(r"module_(\d+)", p.name)
            entries.append(dict(id=int(m.group(1)) if m else None, name=p.name, path=str(p), size=p.stat().st_size))
        return cls(entries)

    def parsed(self, entry) -> "HloModule | None":
        key = entry["path"]
        if key not in self._parsed:
            try:
                p = Path(key)
                if p.suffix == ".gz":
                    import gzip

                    text = gzip.decompress(p.read_bytes()).decode()
                else:
                    text = p.read_text()
                mod = parse_module(text, key)
                mod.id = entry.get("id")
                self._parsed[key] = mod
            except Exception as exc:  # a module that does not parse leaves its kernels without bytes
                self.errors.append(f"{key}: {type(exc).__name__}: {exc}")
                self._parsed[key] = None
        return self._parsed[key]

    def for_program(self, program_id) -> "HloModule | None":
        try:
            entry = self.by_id.get(int(program_id)) if program_id is not None else None
        except (TypeError, ValueError):
            entry = None
        return self.parsed(entry) if entry else self.default

    def choose_default(self, time_by_name: dict, candidates: int = 4) -> "HloModule | None":
        """The module whose names cover most of ``time_by_name`` (kernel or op name -> time), among the
        ``candidates`` largest files; ties go to the latest (the traced program is compiled last)."""
        best, best_key = None, None
        for entry in sorted(self.entries, key=lambda e: -e["size"])[:candidates]:
            mod = self.parsed(entry)
            if mod is None:
                continue
            covered = sum(t for name, t in time_by_name.items() if mod.lookup(name) is not None)
            key = (covered, entry.get("id") or -1)
            if best_key is None or key > best_key:
                best, best_key = mod, key
        self.default = best
        return best


def _self_test() -> int:
    import doctest

    import numpy as np

    fails = doctest.testmod(verbose=False).failed
    assert array_sizes("(f32[64,32]{1,0}, s8[4194304]{0})") == [8192, 4194304]
    assert shape_bytes("f8e4m3fn[10]") == 10 and shape_bytes("s4[10]") == 5 and shape_bytes("token[]") == 0
    assert shape_bytes("f32[]") == 4 and shape_bytes("pred[]") == 1 and shape_bytes("f32[0,3]") == 0
    text = """HloModule jit_f, entry_computation_layout={(f32[64,32]{1,0})->f32[64,32]{1,0}}

%fused_computation.1 (param_0.2: f32[64,32]) -> f32[64,32] {
  %param_0.2 = f32[64,32]{1,0} parameter(0)
  ROOT %tanh.2 = f32[64,32]{1,0} tanh(%param_0.2)
}

ENTRY %main.6 (a.1: f32[64,32], b.1: f32[32,16]) -> (f32[64,32], f32[64,16]) {
  %a.1 = f32[64,32]{1,0} parameter(0), metadata={op_name="a"}
  %b.1 = f32[32,16]{1,0} parameter(1)
  %tanh_fusion.3 = f32[64,32]{1,0} fusion(f32[64,32]{1,0} %a.1), kind=kLoop, calls=%fused_computation.1
  %six = f32[64,32]{1,0} fusion(%a.1, %a.1, %a.1, %a.1, %a.1, /*index=5*/%b.1), kind=kLoop, calls=%fused_computation.1
  %custom-call.1 = (f32[64,16]{1,0}, s8[1024]{0}) custom-call(%a.1, %b.1), custom_call_target="__cublas$gemm", backend_config={"x":"a(b)"}
  %gte = f32[64,16]{1,0} get-tuple-element(%custom-call.1), index=0
  ROOT %t = (f32[64,32]{1,0}, f32[64,16]{1,0}) tuple(%tanh_fusion.3, %gte)
}
"""
    mod = parse_module(text)
    assert mod.name == "jit_f", mod.name
    assert set(mod.ops) == {"tanh_fusion.3", "custom-call.1", "six"}, mod.ops
    assert mod.ops["six"].bytes == 6 * 64 * 32 * 4 + 32 * 16 * 4, mod.ops["six"]
    assert mod.lookup("tanh_fusion_3").bytes == 2 * 64 * 32 * 4
    assert mod.lookup("custom_call_1").bytes == (64 * 32 + 32 * 16 + 64 * 16) * 4  # the workspace left out
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for f in ("module_0662.jit_run_chunk.sm_9.0_gpu_after_optimizations.txt",
                  "module_0007.jit_f.cpu_after_optimizations.txt",
                  "module_0662.jit_run_chunk.sm_9.0_gpu_after_optimizations-buffer-assignment.txt"):
            Path(d, f).write_text(text)
        found = sorted((e["id"], e["name"]) for e in dumped_modules(d))
        assert found == [(7, "jit_f"), (662, "jit_run_chunk")], found
    print(f"shape parser, synthetic module, dump names: ok ({fails} doctest failures)")

    # against XLA: a jitted function's module, compiled here; the sum of the kernels' bytes vs cost_analysis
    import jax
    import jax.numpy as jnp

    def check(label, f, *args, expect=None):
        compiled = jax.jit(f).lower(*args).compile()
        mod = parse_module(compiled.as_text())
        ours = sum(op.bytes for op in mod.ops.values())
        ca = compiled.cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        xla = float(ca.get("bytes accessed", float("nan"))) if ca else float("nan")
        kernels = sorted((o.name, o.opcode, o.bytes) for o in mod.ops.values())
        print(f"{label}: HLO-text bytes {ours:,}  hand {expect if expect is None else f'{expect:,}'}  "
              f"cost_analysis {xla:,.0f}  kernels {kernels if len(kernels) < 3 else len(kernels)}")
        return ours, xla

    a = jnp.asarray(np.ones((64, 32), np.float32))
    b = jnp.asarray(np.ones((32, 16), np.float32))
    hand = (64 * 32 + 32 * 16 + 64 * 16) * 4  # 14,336: A and B read once, C written once
    ours, xla = check("jnp.dot f32[64,32] x f32[32,16]", jnp.dot, a, b, expect=hand)
    ok = ours == hand and (xla != xla or abs(xla - hand) <= 0.01 * hand)
    c = jnp.asarray(np.ones((64, 32), np.float32))
    hand2 = 3 * 64 * 32 * 4  # tanh(a) + c: two reads, one write, one fusion
    ours2, xla2 = check("tanh(a) + c, f32[64,32]", lambda x, y: jnp.tanh(x) + y, a, c, expect=hand2)
    ok &= ours2 == hand2 and (xla2 != xla2 or abs(xla2 - hand2) <= 0.01 * hand2)
    # no hand count: the module's sum against cost_analysis (6 operands: an "/*index=5*/" in the operand list;
    # gather, dot and scatter-add: a message-passing layer)
    x = jnp.asarray(np.ones((1024, 64), np.float32))
    w = jnp.asarray(np.ones((64, 64), np.float32))
    idx = jnp.asarray(np.random.default_rng(0).integers(0, 1024, 4096))
    ours3, xla3 = check("6-operand elementwise f32[1024,64]", lambda a, b, c, d, e, g: a * b + c * d - e / (g + 1),
                        *([x] * 6))
    ours4, xla4 = check("gather-dot-tanh-segment_sum", lambda a, i, w: jax.ops.segment_sum(
        jnp.tanh(a[i] @ w), i % 1024, 1024), x, idx, w)
    ok &= ours3 == 7 * 1024 * 64 * 4 and all(xla != xla or abs(o - xla) <= 0.01 * xla
                                             for o, xla in ((ours3, xla3), (ours4, xla4)))
    print("self-test", "ok" if ok and not fails else "FAILED")
    return 0 if ok and not fails else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module", nargs="?", help="an optimized HLO text file")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        sys.exit(_self_test())
    if not args.module:
        ap.error("give a module file or --self-test")
    mod = parse_module(Path(args.module).read_text(), args.module)
    print(f"{mod.name}: {mod.n_instructions} instructions, {len(mod.ops)} kernel-like")
    for op in sorted(mod.ops.values(), key=lambda o: -o.bytes)[:args.top]:
        print(f"  {op.bytes / 1e6:10.3f} MB  {op.opcode:12s} {op.name:40s} {op.computation[:30]:30s} {op.target}")


if __name__ == "__main__":
    main()
