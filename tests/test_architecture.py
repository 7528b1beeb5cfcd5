"""The layers of sora/ as docs/ARCHITECTURE.md states them: no import breaks the rule, and no import cycle exists.

Imports inside functions count, as they do at run time.
"""

import ast
import re

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "ARCHITECTURE.md"


def stated_layers() -> dict[str, int]:
    """package -> layer, from the ```text table under "## Layers" in docs/ARCHITECTURE.md."""
    section = DOC.read_text().split("## Layers", 1)[1]
    table = section.split("```text", 1)[1].split("```", 1)[0]
    layers = {}
    for line in table.splitlines():
        m = re.match(r"^(\d+)\s+(sora[\w.]*(?:,\s*sora[\w.]*)*)\s*$", line.strip())
        if m:
            for package in m.group(2).split(","):
                layers[package.strip()] = int(m.group(1))
    return layers


def module_imports(root=ROOT) -> dict[str, set[str]]:
    """module -> the sora modules it imports (anywhere in the file), for every module of root/sora/."""
    files = {}
    for path in (root / "sora").rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    edges = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        resolved = set()
        for target in targets:
            while target and target not in files:  # `from sora.x import name`: the module is sora.x
                target = target.rpartition(".")[0]
            if target and target.startswith("sora") and target != name:
                resolved.add(target)
        edges[name] = resolved
    return edges


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def violations(edges: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Imports of a higher layer, or of a sibling package on the same layer."""
    out = []
    for module, targets in edges.items():
        src = package_of(module)
        for target in targets:
            dst = package_of(target)
            if src == dst or dst == "sora":
                continue
            if src not in layers or dst not in layers:
                out.append(f"{module} -> {target}: {src if src not in layers else dst} has no layer in the doc")
            elif layers[dst] >= layers[src]:
                out.append(f"{module} (layer {layers[src]}) imports {target} (layer {layers[dst]})")
    return sorted(out)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_the_doc_states_a_layer_for_every_package():
    layers = stated_layers()
    packages = {package_of(m) for m in module_imports()} - {"sora"}
    assert packages == set(layers), (f"packages without a layer: {packages - set(layers)}; "
                                     f"stale: {set(layers) - packages}")
    assert max(layers, key=layers.get) == "sora.training"  # nothing imports the training layer


def test_no_import_breaks_the_stated_layers():
    assert violations(module_imports(), stated_layers()) == []


def test_no_import_cycles():
    assert cycles(module_imports()) == []


@pytest.mark.parametrize("edges, broken", [
    ({"sora.models.dit": {"sora.training.ema"}}, "sora.models.dit (layer 1) imports sora.training.ema (layer 3)"),
    ({"sora.data.stream": {"sora.diffusion.samplers"}},
     "sora.data.stream (layer 2) imports sora.diffusion.samplers (layer 2)"),
])
def test_the_checker_catches_a_broken_rule(edges, broken):
    layers = {"sora.models": 1, "sora.data": 2, "sora.diffusion": 2, "sora.training": 3}
    assert violations(edges, layers) == [broken]


def test_the_checker_catches_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "sora").mkdir()
    (tmp_path / "sora" / "a.py").write_text("from sora.b import g\n")
    (tmp_path / "sora" / "b.py").write_text("def g():\n    from sora.c import h\n")  # hidden inside a function
    (tmp_path / "sora" / "c.py").write_text("import sora.a\n")
    edges = module_imports(tmp_path)
    assert edges == {"sora.a": {"sora.b"}, "sora.b": {"sora.c"}, "sora.c": {"sora.a"}}
    assert cycles(edges) == [["sora.a", "sora.b", "sora.c"]]
    assert cycles({"sora.a": {"sora.b"}, "sora.b": set()}) == []
