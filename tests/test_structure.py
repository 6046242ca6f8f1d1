"""The library's shape: no import loops between kdlite's modules (a reader can read them bottom-up)."""

import ast
from pathlib import Path

import kdlite

PACKAGE = Path(kdlite.__file__).parent


def module_name(path: Path) -> str:
    parts = ["kdlite", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The kdlite modules ``path`` imports, lazily (inside a function) or not."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else []
            found.update(n for n in [target, *names] if n.startswith("kdlite"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kdlite"))
    return found


def test_the_import_graph_has_no_cycles():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {t for t in imports_of(p) if t in modules and t != m and t != "kdlite"} for m, p in modules.items()}
    graph = {m: ts for m, ts in graph.items() if m != "kdlite"}  # the package's __init__ imports every module
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                raise AssertionError("import loop: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_chapters_show_and_import_public_names_only():
    import re

    chapters = sorted((PACKAGE.parent / "notebooks").glob("[0-9][0-9]_*.md"))
    private = re.compile(r"\b(?:kdlite|quant|losses|measure|prune|distill|features|report|train|data|int8|structured"
                         r"|masks|device|scale|models)\._[a-zA-Z]|from kdlite[\w.]* import [^\n]*\b_[a-z]")
    found = [f"{md.name}:{i}: {line.strip()}" for md in chapters
             for i, line in enumerate(md.read_text().splitlines(), 1) if private.search(line)]
    assert not found, "chapters use private kdlite names:\n" + "\n".join(found)
