"""The package's layers (DESIGN.md): a module imports only from its own area or a lower layer
(every import counts, also those inside functions), and no import cycle exists between files
(the imports a module runs when it is loaded: those at its top level)."""
import ast
from pathlib import Path

import numpylm

ROOT = Path(numpylm.__file__).parent

# Area -> layer, bottom to top. An area is a subpackage or a top-level module of numpylm.
LAYERS = {
    "autograd": 0,
    "functional": 1, "io": 1, "blas": 1, "plots": 1,
    "nn": 2, "optim": 2, "tokenizers": 2, "corpus": 2, "testing": 2,
    "quant": 3, "chat": 3,
    "models": 4,
    "inference": 5, "evaluation": 5,
    "training": 6,  # reports validation losses with evaluation's tools
    "tuning": 7,
    "serving": 8, "ladder": 8,
    "cli": 9,  # the front door, with every `commands.py` and __main__; it may import the root
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _area(module: str) -> str | None:
    parts = module.split(".")
    if module == "numpylm":
        return None  # the package root re-exports every layer
    if parts[-1] in ("commands", "__main__"):
        return "cli"
    return parts[1]


def _resolve(module: str, node: ast.AST, current: str, is_package: bool) -> list[str]:
    """The numpylm modules an import statement loads."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative import
            package = current if is_package else current.rsplit(".", 1)[0]
            for _ in range(node.level - 1):
                package = package.rsplit(".", 1)[0]
            base = f"{package}.{base}" if base else package
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            names.append(candidate if _exists(candidate) else base)
    return [n for n in names if n == "numpylm" or n.startswith("numpylm.")]


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _top_level(tree: ast.Module):
    """Import statements run at load time: outside every function and class body."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _imports(top_level_only: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in (_top_level(tree) if top_level_only else ast.walk(tree)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets.update(_resolve(module, node, module, path.name == "__init__.py"))
        graph[module] = targets - {module}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        area = _area(module)
        if area is None:
            continue
        for target in targets:
            target_area = _area(target)
            if target_area is None:
                if area != "cli":
                    bad.append(f"{module} imports the package root")
            elif target_area != area and LAYERS[target_area] >= LAYERS[area]:
                bad.append(f"{module} ({area}, layer {LAYERS[area]}) imports {target} "
                           f"({target_area}, layer {LAYERS[target_area]})")
    return sorted(bad)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one file (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_every_area_has_a_layer():
    areas = {_area(m) for m in _imports()} - {None}
    assert not areas - set(LAYERS), f"areas without a layer: {sorted(areas - set(LAYERS))}"


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(_imports())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle_between_files():
    cycles = import_cycles(_imports(top_level_only=True))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_can_fail():
    graph = {"numpylm.autograd.tensor": {"numpylm.models.gpt"},
             "numpylm.models.gpt": {"numpylm.autograd.tensor"}}
    assert upward_imports(graph) == [
        "numpylm.autograd.tensor (autograd, layer 0) imports numpylm.models.gpt (models, layer 4)"]
    assert import_cycles(graph) == [["numpylm.autograd.tensor", "numpylm.models.gpt"]]
