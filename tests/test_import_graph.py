"""The layout of the package: no import circle, and no import from the core up to the layers
built on it. The graph is read from the source files with ``ast`` (imports inside functions
count too: a lazy import is still a dependency), so it needs no import of skicm itself."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "skicm"

#: Layers built on the core, by prefix; a module may import from its own layer, from the layers
#: listed after its own in this order, and from the core, never from a layer listed before it.
LAYERS = ("skicm.__main__", "skicm.cli", "skicm.plotting", "skicm.evaluation", "skicm.distributed")


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name, path, modules):
    """The skicm modules that ``name`` imports: ``from a import b`` is module ``a.b`` where that
    is a module, else ``a``. The parent packages Python runs on the way are not counted: a
    package's ``__init__`` importing its own submodules is how packages are built."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _reachable(graph, start):
    seen, todo = set(), list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


def test_the_graph_is_read(graph):
    # The reader finds the imports it must (a reader that finds none would pass every test).
    assert "skicm.projection" in graph["skicm"]
    assert "skicm.evaluation" in graph["skicm.plotting"]
    assert "skicm.evaluation._domain_scores" in graph["skicm.evaluation._plots"]
    assert "skicm.evaluation" in graph["skicm.cli.evaluate"]


def test_no_module_imports_a_module_that_imports_it(graph):
    circles = sorted(
        f"{module} -> {other} -> ... -> {module}"
        for module in graph
        for other in graph[module]
        if module in _reachable(graph, other) or other == module
    )
    assert not circles, "import circles:\n" + "\n".join(circles)


def _layer(module):
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return index
    return len(LAYERS)  # the core


def test_no_import_reaches_up_a_layer(graph):
    upward = sorted(
        f"{module} imports {other}"
        for module, imported in graph.items()
        for other in imported
        if _layer(other) < _layer(module)
    )
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)
