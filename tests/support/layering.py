"""The import-layer check: reads the layer order from docs/architecture.md and lists every import
against it. Pure (reads files, runs nothing); ``tests/unit/test_layers.py`` runs it on the tree
and on trees made to break it.

Rules:
- every runtime module (a package under the layer names) belongs to the layer of the longest
  name that is a prefix of its dotted name; it may import its own layer and the layers below,
  at module level, inside a function or for type checking alike (a type named is a dependency);
- nothing imports ``supervisor`` from outside it (the sandbox, tests and bench aside): it is
  the process, the top of the order;
- no runtime module imports the sandbox at module level; only ``supervisor`` may import it,
  and only inside a function (the commands and settings that need it);
- the sandbox imports no test or bench module.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TOOLING = ("sandbox", "tests", "bench")
_LAYERS_BLOCK = re.compile(r"```layers\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it stands and whether it runs at import time."""

    module: str
    target: str
    line: int
    top_level: bool


def layer_order(architecture: Path) -> list[str]:
    """The layer names of the ```layers block, lowest first (one per line, # comments)."""
    match = _LAYERS_BLOCK.search(architecture.read_text())
    if match is None:
        raise ValueError(f"{architecture} has no ```layers block")
    names = [line.split("#", 1)[0].strip() for line in match[1].splitlines()]
    return [name for name in names if name]


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(root: Path, path: Path) -> Iterator[Import]:
    """Every absolute or relative import of ``path``, resolved to a dotted target."""
    module = _module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        # if/try at module level still run at import time; TYPE_CHECKING blocks never do.
        if isinstance(node, ast.If | ast.Try) and id(node) in top_level:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            top_level.update(id(child) for child in ast.iter_child_nodes(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` may name a submodule: count it as importing pkg.sub.
            targets = [f"{base}.{alias.name}" for alias in node.names] if base else []
        else:
            continue
        for target in targets:
            yield Import(module, target, node.lineno, id(node) in top_level)


def layer_of(module: str, layers: list[str]) -> int | None:
    """The index of ``module``'s layer: the longest layer name that is a prefix of it."""
    candidates = [
        (len(name), index)
        for index, name in enumerate(layers)
        if module == name or module.startswith(name + ".")
    ]
    return max(candidates)[1] if candidates else None


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def violations(root: Path, layers: list[str]) -> list[str]:
    """Every import against the rules above, as ``path:line: reason`` lines (sorted)."""
    tops = {_top(name) for name in layers}
    found = []
    for path in sorted(root.glob("**/*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] not in tops | set(TOOLING):
            continue
        for imp in imports(root, path):
            where = f"{relative}:{imp.line}"
            source, target = _top(imp.module), _top(imp.target)
            if source in TOOLING:
                if source == "sandbox" and target in ("tests", "bench"):
                    found.append(f"{where}: the sandbox imports {imp.target}")
                continue
            if target == "sandbox":
                if source != "supervisor":
                    found.append(f"{where}: {imp.module} imports the sandbox ({imp.target})")
                elif imp.top_level:
                    found.append(f"{where}: {imp.module} imports the sandbox at module level")
                continue
            if target not in tops:
                continue  # the standard library or a dependency
            mine, theirs = layer_of(imp.module, layers), layer_of(imp.target, layers)
            if mine is None:
                found.append(f"{where}: {imp.module} is in no layer")
            elif theirs is None:
                found.append(f"{where}: {imp.module} imports {imp.target}, which is in no layer")
            elif theirs > mine:
                found.append(
                    f"{where}: {imp.module} ({layers[mine]}) imports {imp.target}"
                    f" ({layers[theirs]}, a higher layer)"
                )
    return found
