"""The structure rules of ARCHITECTURE.md, checked on the source: no import circles between
modules at import time, no product module that refers to ../shared, and every module path the
document names exists."""
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


def _import_time_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Imports executed when a module is imported: module level, not inside functions."""
    edges = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for node in tree.body:                      # top-level statements only
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


def test_no_import_circles():
    mods = _modules()
    edges = _import_time_edges(mods)
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for m in sorted(mods):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


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
