"""The package's shape: imports run one way (no cycle, module-level or inside functions), in layers (shared homes,
the method core, evaluation, the main job, then the studies), no study reaches into another unless declared, and
every stage-running module goes through the one stage cache."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "weight_steering"
SHARED = {"artifacts", "stage_cache", "rendering", "evaluation.statistics", "evaluation.datasets"}  # import nothing above them
LAYERS = ("shared", "core", "evaluation", "main_job", "study")
STUDIES = {"comparison", "ablation", "hypotheses", "monitoring", "vignettes", "degradation", "sweep", "export"}
STUDY_USES = {"ablation": {"hypotheses"}}  # the ablation's causal check scores the hypotheses' candidate subspaces


def _module(file: Path) -> str:
    parts = file.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (module level and inside functions), with the packages they open."""
    modules = {_module(f) for f in PACKAGE.rglob("*.py")}
    graph = {}
    for file in PACKAGE.rglob("*.py"):
        name = _module(file)
        here = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
        if name == "":
            here = []
        found = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                targets = [".".join(base + [a.name]) for a in node.names if ".".join(base + [a.name]) in modules] or [".".join(base)]
                for target in targets:
                    parts = target.split(".")
                    found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules)
        # a package's own __init__ is already running when one of its modules imports a sibling: not an edge
        found -= {".".join(name.split(".")[:i]) for i in range(0, len(name.split(".")) + 1)}
        graph[name] = found
    return graph


def _layer(module: str) -> str:
    top = module.split(".")[0]
    if module in SHARED:
        return "shared"
    return {"core": "core", "evaluation": "evaluation", "main_job": "main_job"}.get(top, "study")


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

    for module in sorted(m for m in graph if m != "" and m.split(".")[0] != "cli"):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_imports_run_down_the_layers_and_studies_stay_in_their_folders():
    graph = _imports()
    assert graph["artifacts"] == set() and graph["evaluation.statistics"] <= {"evaluation"}
    assert graph["stage_cache"] <= {"artifacts"}
    wrong = []
    for module, deps in graph.items():
        if module == "" or module.split(".")[0] == "cli":
            continue
        for dep in deps:
            if dep == "" or dep.split(".")[0] == "cli":
                wrong.append(f"{module} imports the package root or the CLI")
                continue
            if LAYERS.index(_layer(dep)) > LAYERS.index(_layer(module)) and dep != "evaluation":  # the package of statistics and datasets
                wrong.append(f"{module} imports {dep} (a higher layer)")
            mine, theirs = module.split(".")[0], dep.split(".")[0]
            if _layer(module) == _layer(dep) == "study" and mine != theirs and theirs not in STUDY_USES.get(mine, set()):
                wrong.append(f"study {module} reaches into study {dep}")
    assert not wrong, wrong


def test_stage_running_modules_share_the_one_stage_cache():
    for module in ("main_job/stages", "sweep/run", "comparison/run", "vignettes/run", "degradation/run", "ablation/run", "monitoring/run"):
        text = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
        assert "run_stage(" in text, module
        assert '"stage.json"' not in text, f"{module} writes stage markers itself instead of through stage_cache"


def test_every_docstring_reference_to_a_package_name_resolves():
    """``:func:`weight_steering.x.y``` and the like name a module and attribute that exist (they moved with the layout)."""
    import importlib
    import re

    missing = []
    for file in PACKAGE.rglob("*.py"):
        for ref in set(re.findall(r":(?:func|mod|class|data):`~?(weight_steering\.[A-Za-z_.]+)`", file.read_text(encoding="utf-8"))):
            parts = ref.rstrip(".").split(".")
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                for name in parts[i:]:
                    obj = getattr(obj, name, None)
                if obj is None:
                    missing.append(f"{file.relative_to(PACKAGE)}: {ref}")
                break
    assert not missing, missing
