"""The package's shape: imports run one way (no cycle, module-level or inside functions), the shared homes import
nothing above them, and every stage-running module goes through the one stage cache."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "weight_steering"


def _imports() -> dict[str, set[str]]:
    graph = {}
    for file in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
        graph[file.stem] = found
    return graph


def test_the_import_graph_has_no_cycle():
    graph, state, cycles = _imports(), {}, []

    def visit(module, stack):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_shared_homes_import_nothing_above_them():
    graph = _imports()
    assert graph["artifacts"] == set() and graph["statistics"] == set()
    assert graph["stage_cache"] <= {"artifacts"}


def test_stage_running_modules_share_the_one_stage_cache():
    for module in ("pipeline", "sweep", "compare", "assess", "monitor"):
        text = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
        assert "run_stage(" in text, module
        assert '"stage.json"' not in text, f"{module} writes stage markers itself instead of through stage_cache"
