"""The package's import graph, read from the source with `ast`: one line per module and what it imports from
the package, then every breach of the house rules (docs/architecture.md); exits 1 if there is one.

    python bench/imports.py

The rules: no import circle; a stage imports only its own and lower stages (`runtime` < `vectors`, `reducers` <
`evaluate` < `experiment` < `compress` < `cli`), and `vectors` and `reducers` never import each other; Hydra,
OmegaConf and MLflow are imported only in `experiment/`, `cli` and `compress`, MLflow only in
`experiment/tracking/`, and a store's MLflow `client` is used nowhere else; no module over 250 lines, the job
over 150; at most 10 entries at the package's top level.
"""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "simreduce"
STAGE_LEVEL = {"runtime": 0, "vectors": 1, "reducers": 1, "evaluate": 2, "experiment": 3, "compress": 4, "cli": 5}
TOP_LEVEL = {"simreduce": 0, "simreduce.conf": 0, "simreduce.__main__": 6}  # the package itself, its data, `-m`
CONFIG_LIBRARIES = ("hydra", "omegaconf", "mlflow")
CONFIG_STAGES = ("experiment", "compress", "cli")
TRACKING = "simreduce.experiment.tracking"
MAX_LINES, MAX_JOB_LINES, MAX_TOP_ENTRIES = 250, 150, 10


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports, at any depth of its code (deferred imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found |= {name for name in names if name in modules}
    return found - {module_name(path)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle found by a depth-first walk, each as the path that closes it."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def stage(module: str) -> str:
    """`vectors` for `simreduce.vectors.cache`; the module itself for `simreduce.cli`."""
    return module.split(".")[1] if "." in module else module


def level(module: str) -> int:
    return TOP_LEVEL.get(module, STAGE_LEVEL.get(stage(module), 0))


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of the libraries `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def uses_client(path: Path) -> bool:
    """Whether `path` reaches for an MLflow client (`store.client`, `MlflowClient`)."""
    tree = ast.parse(path.read_text())
    return any(
        (isinstance(node, ast.Attribute) and node.attr == "client")
        or (isinstance(node, ast.Name) and node.id == "MlflowClient")
        for node in ast.walk(tree)
    )


def breaches(paths: list[Path], graph: dict[str, set[str]]) -> list[str]:
    found = [f"import circle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    for path in paths:
        name, lines = module_name(path), len(path.read_text().splitlines())
        for imported in sorted(graph[name]):
            if level(imported) > level(name):
                found.append(f"{name} imports {imported}, a later stage")
            elif {stage(name), stage(imported)} == {"vectors", "reducers"}:
                found.append(f"{name} imports {imported}: vectors/ and reducers/ never import each other")
        libraries = third_party_imports(path)
        if stage(name) not in CONFIG_STAGES and (banned := sorted(libraries & set(CONFIG_LIBRARIES))):
            found.append(f"{name} imports {', '.join(banned)}, which only experiment/, cli and compress may")
        if not name.startswith(TRACKING) and ("mlflow" in libraries or uses_client(path)):
            found.append(f"{name} uses MLflow or its client, which only {TRACKING} may")
        limit = MAX_JOB_LINES if name == "simreduce.experiment.job" else MAX_LINES
        if lines > limit:
            found.append(f"{name} has {lines} lines, over {limit}")
    top = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.endswith(".egg-info"))
    if len(top) > MAX_TOP_ENTRIES:
        found.append(f"the package's top level has {len(top)} entries, over {MAX_TOP_ENTRIES}: {', '.join(top)}")
    return found


def main() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): package_imports(p, modules) for p in paths}
    for path in paths:
        name, lines = module_name(path), len(path.read_text().splitlines())
        print(f"{name:40} {lines:4} lines -> {', '.join(sorted(graph[name])) or '-'}")
    found = breaches(paths, graph)
    print("\nbreaches of the house rules:", "none" if not found else "")
    for line in found:
        print("  " + line)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
