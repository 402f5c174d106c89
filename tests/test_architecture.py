"""The structure rules of ARCHITECTURE.md, checked on the source: no import circles between
modules (every import counts, those inside functions too), the layer table (LAYERS) holds, no
product module refers to ../shared, and every module path the document names exists."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# source folder -> the package it is installed as (pyproject's package-dir)
PACKAGES = {ROOT / "cmunext_edge": "cmunext_edge", ROOT / "export": "cmunext_edge.export"}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = path
    return mods


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


# a dotted module path in a string: what importlib.import_module / __import__ and the dispatch
# tables ("cmunext_edge.runtime.openvino_backend:OpenVINOBackend") import by name
_MODULE_REF = re.compile(r"(cmunext_edge(?:\.\w+)*)(?::\w+)?")
_IMPORT_CALLS = {"import_module", "__import__"}


def _string_imports(node: ast.AST) -> set[str]:
    """Modules imported by name: the literal argument of importlib.import_module(...) or
    __import__(...), and every "module:attribute" string (a dispatch table's entry)."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in _IMPORT_CALLS:
        return {str(node.args[0].value)}
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
        match = _MODULE_REF.fullmatch(node.value)
        return {match.group(1)} if match else set()
    return set()


def _import_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every import a module makes, wherever it stands: module level, inside functions, under
    `if TYPE_CHECKING:`, and by name (importlib.import_module, __import__, "module:attr" dispatch
    entries). (Importing a submodule runs its parent package's __init__ first; that implicit step
    is not an edge: a package may import its own submodules.)"""
    edges = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for node in ast.walk(tree):
            targets |= _string_imports(node)
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                subs = {f"{base}.{a.name}" for a in node.names}
                targets |= subs & set(mods)
                if subs - set(mods):        # names defined in `base` itself, not submodules of it
                    targets.add(base)
        edges[name] = {t for t in targets if t in mods and t != name}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_import_circles():
    cycles = _cycles(_import_edges(_modules()))
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


# The layer rules, one table: each part of the package -> the parts it may import (besides
# itself). "base" is the top-level modules (_version, _deps, fileio, progress, resources,
# toolchain, capabilities); "package" is cmunext_edge/__init__.py, the public surface. Nothing
# below cli/ imports cli/ or scale/; core/ imports only base; the device side (device/, runtime/,
# artifacts/) never imports the exporters (export/) or training (train/).
BASE = {"base"}
LAYERS = {
    "base": set(),
    "core": BASE,
    "data": BASE | {"core"},
    "checkpoints": BASE | {"core"},
    "artifacts": BASE | {"core"},
    "predict": BASE | {"core", "data"},
    "runtime": BASE | {"core", "data", "checkpoints", "artifacts", "predict"},
    "bench": BASE | {"core", "data", "checkpoints", "artifacts", "runtime"},
    "train": BASE | {"core", "data", "checkpoints"},
    "device": BASE | {"core", "data", "artifacts", "runtime", "bench"},
    "export": BASE | {"core", "data", "checkpoints", "artifacts", "runtime", "bench"},
    "scale": BASE | {"core", "data", "predict", "runtime"},
    "cli": BASE | {"core", "data", "checkpoints", "artifacts", "predict", "runtime", "bench", "train",
                   "device", "export", "scale"},
    "package": BASE | {"core", "runtime"},
}


def _part(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return parts[1] if parts[1] in LAYERS else "base"


def test_layer_table_is_a_layering():
    assert all(allowed <= set(LAYERS) for allowed in LAYERS.values())
    assert not _cycles({part: set(allowed) for part, allowed in LAYERS.items()}), "the layer table has a circle"
    assert not any("cli" in allowed or "scale" in allowed for part, allowed in LAYERS.items() if part != "cli")


def test_layer_rules():
    mods = _modules()
    assert {_part(m) for m in mods} == set(LAYERS), "every part of the package has a row in LAYERS"
    violations = sorted(f"{a} -> {b}" for a, targets in _import_edges(mods).items() for b in targets
                        if _part(b) != _part(a) and _part(b) not in LAYERS[_part(a)])
    assert not violations, "imports against the layer table: " + "; ".join(violations)


def test_the_checks_see_imports_inside_functions(tmp_path):
    """A circle made only by an import inside a function, and a layer violation made the same
    way, are both found (the checks read every import, not only the module-level ones)."""
    pkg = tmp_path / "cmunext_edge"
    (pkg / "core").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "core" / "a.py").write_text("def f():\n    from cmunext_edge.core.b import g\n")
    (pkg / "core" / "b.py").write_text("from cmunext_edge.core import a\n"
                                       "def g():\n    from cmunext_edge.cli.main import run\n")
    (pkg / "cli" / "main.py").write_text("")
    mods = {"cmunext_edge.core.a": pkg / "core" / "a.py", "cmunext_edge.core.b": pkg / "core" / "b.py",
            "cmunext_edge.cli.main": pkg / "cli" / "main.py"}
    edges = _import_edges(mods)
    assert _cycles(edges) == [["cmunext_edge.core.a", "cmunext_edge.core.b", "cmunext_edge.core.a"]]
    assert "cmunext_edge.cli.main" in edges["cmunext_edge.core.b"] and "cli" not in LAYERS["core"]


def test_the_checks_see_imports_by_name(tmp_path):
    """importlib.import_module("..."), __import__("...") and a "module:attr" dispatch entry are
    imports too: a layer violation written that way is found."""
    pkg = tmp_path / "cmunext_edge"
    (pkg / "core").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "cli" / "main.py").write_text("")
    (pkg / "core" / "a.py").write_text('import importlib\ndef f():\n    importlib.import_module("cmunext_edge.cli.main")\n')
    (pkg / "core" / "b.py").write_text('def f():\n    return __import__("cmunext_edge.cli.main")\n')
    (pkg / "core" / "c.py").write_text('TABLE = {"x": "cmunext_edge.cli.main:run"}\n')
    mods = {f"cmunext_edge.core.{m}": pkg / "core" / f"{m}.py" for m in "abc"}
    mods["cmunext_edge.cli.main"] = pkg / "cli" / "main.py"
    edges = _import_edges(mods)
    assert all("cmunext_edge.cli.main" in edges[f"cmunext_edge.core.{m}"] for m in "abc"), edges


def test_no_product_module_refers_to_shared():
    offenders = [str(p.relative_to(ROOT)) for p in _modules().values() if "../shared" in p.read_text()]
    assert not offenders, f"product code refers to ../shared: {offenders}"


def test_architecture_names_only_modules_that_exist():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`((?:cmunext_edge|export|benchmarks|tests)/[\w/.]*)`", text))
    assert len(named) > 20, "ARCHITECTURE.md should name the modules it describes"
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"
    mods = {str(p.relative_to(ROOT)) for p in _modules().values()}
    undocumented = sorted(m for m in mods if m not in named and not m.endswith("__init__.py"))
    assert not undocumented, f"modules ARCHITECTURE.md does not place: {undocumented}"
