"""No runtime module outside ``providers/`` and ``kinds/`` compares a kind or provider name:
behaviour that differs per kind reads the registry entry or the provider's capabilities.

Reads the source (AST) of every runtime module: a comparison (``==``, ``!=``, ``in``, ``not
in``) with a shipped kind's name as a string literal is a violation; naming a kind elsewhere
(a dictionary key, a metric label, a route) is not a comparison and is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from kinds import default_registry
from tests.support.layering import layer_order

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("providers", "kinds")
NAMES = frozenset(default_registry().names())


def _literals(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [v for element in node.elts for v in _literals(element)]
    return []


def comparisons(source: str) -> list[tuple[int, str]]:
    """(line, name) of every comparison with a kind name literal in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, name) for name in _literals(operand) if name in NAMES]
    return found


def test_the_check_sees_a_comparison() -> None:
    assert comparisons('if account.provider == "google":\n    pass\n') == [(1, "google")]
    assert comparisons('ok = kind in ("microsoft", "x")\n') == [(1, "microsoft")]
    assert comparisons('clients["google"] = client\nlabel("microsoft")\n') == []


def test_no_kind_name_is_compared_outside_providers_and_kinds() -> None:
    tops = {name.split(".")[0] for name in layer_order(ROOT / "docs" / "architecture.md")}
    violations = [
        f"{path.relative_to(ROOT)}:{line}: compares {name!r}"
        for top in sorted(tops - set(ALLOWED))
        for path in sorted((ROOT / top).rglob("*.py"))
        for line, name in comparisons(path.read_text())
    ]
    assert violations == []
