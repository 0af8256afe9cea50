"""The package's shape holds: no import cycle among ``ablate/`` modules, ``ablate`` never imports
``analysis`` (the report reads ablate's public records; ablate knows nothing of the report), and
every module is listed in the README's layout.

The import graph is read from the source with ``ast``, not by importing: an edge is an ``import`` or
``from ... import`` statement naming a module of the repository. A module-level edge runs when the
module is imported; a late edge (inside a function) runs when the function is called. Neither may
close a cycle, so a late import is no way around one. ``if TYPE_CHECKING:`` imports never run and are
left out. Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit edges are
left out (a package's ``__init__`` re-exporting its modules is not a tangle).

``python tests/test_layout.py`` prints the graph's cycles and upward imports.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ablate", "analysis")


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    line: int
    late: bool  # inside a function: runs when the function is called


def module_files(root: Path = REPO) -> dict[str, Path]:
    """Every module of the repository's packages, by dotted name (a package by its ``__init__``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module):
    """(node, late) for each import statement that runs, late when inside a function."""
    stack = [(node, False) for node in tree.body]
    while stack:
        node, late = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend((n, late) for n in node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, late
            continue
        inner = late or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known) -> list[str]:
    """The repository modules an import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [_known_prefix(name, known) for name in names if _known_prefix(name, known)]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join([*base, node.module] if node.module else base)
    else:
        origin = node.module or ""
    out = []
    for alias in node.names:
        full = f"{origin}.{alias.name}"
        target = full if full in known else _known_prefix(origin, known)
        if target:
            out.append(target)
    return out


def _known_prefix(name: str, known) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def import_graph(root: Path = REPO) -> list[Edge]:
    files = module_files(root)
    edges = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, late in _imports(tree):
            for target in _targets(node, module, path.name == "__init__.py", files):
                if target != module:
                    edges.append(Edge(module, target, node.lineno, late))
    return edges


def cycles(edges: list[Edge], package: str = "ablate", late: bool = True) -> list[list[str]]:
    """The strongly connected components (of more than one module) among ``package``'s modules,
    through module-level edges and, with ``late``, function-level ones too."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        inside = e.source.split(".")[0] == package and e.target.split(".")[0] == package
        if inside and (late or not e.late):
            graph.setdefault(e.source, set()).add(e.target)
    return [sorted(c) for c in _components(graph) if len(c) > 1]


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    nodes = sorted(set(graph) | {t for ts in graph.values() for t in ts})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.add(top)
                        if top == node:
                            break
                    found.append(component)
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def upward(edges: list[Edge]) -> list[Edge]:
    """Imports of ``analysis`` from ``ablate``."""
    return [e for e in edges if e.source.split(".")[0] == "ablate" and e.target.split(".")[0] == "analysis"]


def readme_layout(root: Path = REPO) -> str:
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def layout_blocks(root: Path = REPO) -> dict[str, str]:
    """The README layout's entries: the first word of a line (a folder or a file), with the text of
    that line and of its indented continuation lines."""
    blocks: dict[str, str] = {}
    key = None
    for line in readme_layout(root).splitlines():
        if line[:1].isspace() and key:
            blocks[key] += " " + line.strip()
        elif line.strip():
            key, _, text = line.partition(" ")
            blocks[key] = text
    return blocks


def unlisted(root: Path = REPO) -> list[str]:
    """``ablate`` modules the README's layout does not name: a module is listed by a line of its own
    (its path first), or by the line of a folder above it that names it relative to that folder
    (``backends/`` for a package, ``single.py`` or ``backends/single.py`` for a module)."""
    blocks = layout_blocks(root)
    missing = []
    for module, path in module_files(root).items():
        if not module.startswith("ablate"):
            continue
        rel = path.relative_to(root).as_posix()
        own = rel[: -len("__init__.py")] if path.name == "__init__.py" else rel
        if own in blocks or any(_names(blocks.get(folder, ""), own[len(folder):]) for folder in _folders(own)):
            continue
        missing.append(rel)
    return missing


def _folders(rel: str) -> list[str]:
    parts = rel.rstrip("/").split("/")[:-1]
    return ["/".join(parts[:i]) + "/" for i in range(len(parts), 0, -1)]


def _names(text: str, tail: str) -> bool:
    """Whether a layout entry's ``text`` names ``tail`` (a path below its folder) or its last part."""
    last = tail.rstrip("/").rsplit("/", 1)[-1] + ("/" if tail.endswith("/") else "")
    return any(re.search(rf"(?<![\w/.]){re.escape(t)}(?![\w])", text) for t in {tail, last})


def test_no_import_cycle_in_ablate():
    found = cycles(import_graph())
    assert not found, "import cycles among ablate modules (late imports included):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_ablate_never_imports_analysis():
    found = upward(import_graph())
    assert not found, "ablate imports analysis:\n" + "\n".join(
        f"{e.source}:{e.line} -> {e.target}" for e in found
    )


def test_every_module_is_in_the_readme_layout():
    assert not unlisted(), f"modules missing from the README's layout: {unlisted()}"


def test_the_graph_sees_a_cycle_and_an_upward_import(tmp_path):
    # The checks above pass on a tree with no edges at all: this pins that the reader finds them.
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "ablate" / "a.py").write_text("from ablate import b\n")
    (tmp_path / "ablate" / "b.py").write_text("def f():\n    from .a import x\n")
    (tmp_path / "ablate" / "c.py").write_text("import analysis.load\nfrom typing import TYPE_CHECKING\n"
                                              "if TYPE_CHECKING:\n    from ablate import d\n")
    (tmp_path / "ablate" / "d.py").write_text("from ablate.c import y\n")
    (tmp_path / "analysis" / "load.py").write_text("")
    (tmp_path / "README.md").write_text("## Layout\n\n```\nablate/a.py  one\nablate/      b.py, c.py and\n"
                                        "             __init__.py\n```\n")
    assert unlisted(tmp_path) == ["ablate/d.py"]
    edges = import_graph(tmp_path)
    assert cycles(edges) == [["ablate.a", "ablate.b"]]
    assert cycles(edges, late=False) == []
    assert [(e.source, e.target) for e in upward(edges)] == [("ablate.c", "analysis.load")]


def main() -> None:
    edges = import_graph()
    late = [e for e in edges if e.late]
    print(f"{len(module_files())} modules, {len(edges)} import edges ({len(late)} late)")
    for label, found in (("module-level", cycles(edges, late=False)), ("any", cycles(edges))):
        print(f"\ncycles among ablate modules, {label} edges: {len(found)}")
        for c in found:
            print("  " + " <-> ".join(c))
    ups = upward(edges)
    print(f"\nablate -> analysis imports: {len(ups)}")
    for e in ups:
        print(f"  {e.source}:{e.line} -> {e.target}{' (late)' if e.late else ''}")
    down = sorted({(e.source, e.target) for e in edges if e.source.startswith("analysis")
                   and e.target.startswith("ablate")})
    print(f"\nanalysis -> ablate imports: {len(down)} module pairs")
    for s, t in down:
        print(f"  {s} -> {t}")
    print(f"\nmodules missing from the README layout: {unlisted()}")


if __name__ == "__main__":
    sys.exit(main())
