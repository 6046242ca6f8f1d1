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
    sliced = [f"{md.name}:{i}" for md in chapters for i, line in enumerate(md.read_text().splitlines(), 1)
              if "getsource(" in line and ".split(" in line]
    assert not sliced, f"chapters slice printed sources at string literals (split the function instead): {sliced}"


def check_share(path: Path) -> float:
    """Check statements over all statements (imports, docstrings and definitions aside): the statements inside
    ``_check*`` functions, ``if`` blocks whose body only raises, and ``raise`` statements (issue #15's measure)."""
    tree = ast.parse(path.read_text())
    statements = lambda node: [n for n in ast.walk(node) if isinstance(n, ast.stmt)]  # noqa: E731
    skipped = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)
    docstring = lambda n: isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(  # noqa: E731
        n.value.value, str)
    counted = [n for n in statements(tree) if not isinstance(n, skipped) and not docstring(n)]
    checks = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef) and n.name.startswith("_check"):
            checks.update(id(m) for m in statements(n) if m is not n)
        if isinstance(n, ast.If) and n.body and not n.orelse and all(isinstance(b, ast.Raise) for b in n.body):
            checks.update([id(n), *(id(b) for b in n.body)])
        if isinstance(n, ast.Raise):
            checks.add(id(n))
    return sum(id(s) in checks for s in counted) / max(1, len(counted))


def test_modules_are_mostly_formula_not_checks():
    over = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE))
        if path.name != "_checks.py" and check_share(path) > 0.20:  # kdlite/_checks.py, kdlite/data/_checks.py
            over[name] = round(check_share(path), 3)
    assert not over, f"modules above 20% check statements: {over}"


def test_no_module_imports_another_modules_private_names():
    """Private helpers stay in their module; the shared checks are the one private module others import."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("kdlite")):
                found += [f"{path.relative_to(PACKAGE)}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and a.name != "_checks"]
    assert not found, "imports of another module's private names:\n" + "\n".join(found)


def test_the_api_rule_is_written_down():
    doc = kdlite.__doc__
    for words in ("in place", "A copy of", "eval_mode", "``data``", "``accuracy``", "seconds", "PRUNABLE"):
        assert words in doc, words


def test_no_file_is_too_long_to_read_in_one_sitting():
    lines = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {name: n for name, n in lines.items() if n > 400}
    assert not long, f"files over 400 lines: {long}"
