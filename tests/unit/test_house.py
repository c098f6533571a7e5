"""The house rules of the code base (docs/architecture.md), checked on every run.

* imports go down the stages only: spec -> source/sim -> evidence -> decision ->
  exporters/rules -> service -> cli (imports inside functions included);
* no module over 700 lines; no function over 80 lines unless a ``# long: why`` comment
  sits right above its ``def`` (or its decorators).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("detector", "exporters", "rules")
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80

# stage of every first-party package, lowest first; a module may import its own stage or lower
STAGES: dict[str, int] = {
    "detector": 0,  # the package root (its lazy public surface), detector.errors, detector.timefmt
    "detector.errors": 0,
    "detector.timefmt": 0,
    "detector.spec": 1,
    "detector.source": 2,
    "detector.sim": 2,
    "detector.evidence": 3,
    "detector.decision": 4,
    "exporters": 5,
    "rules": 5,
    "detector.service": 6,
    "detector.cli": 7,
}
# side by side on one stage, but one way only
FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("detector.source", "detector.sim"),  # the simulator writes data for sources, not the reverse
    ("exporters", "rules"),  # exporters hold the alert catalogue; the rule generator reads it
)


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _stage_key(module: str) -> str | None:
    best = None
    for key in STAGES:
        if (module == key or module.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    return best


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
                name = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # `from detector import causal` imports the module detector.causal
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in out if name.split(".")[0] in PACKAGES]


def test_imports_only_go_down_the_stages() -> None:
    wrong: list[str] = []
    for path in _modules():
        module = _module_name(path)
        own = _stage_key(module)
        assert own is not None, f"{module}: no stage (add it to STAGES)"
        for line, target in _imports(ast.parse(path.read_text(encoding="utf-8")), module):
            key = _stage_key(target)
            if key is None:
                continue
            where = f"{path.relative_to(ROOT)}:{line}: {module} imports {target}"
            if STAGES[key] > STAGES[own]:
                wrong.append(f"{where} (stage {STAGES[key]} above {STAGES[own]})")
            for low, high in FORBIDDEN:
                if own.startswith(low) and key.startswith(high):
                    wrong.append(f"{where} ({low} must not import {high})")
    assert not wrong, "\n".join(wrong)


def test_no_module_over_700_lines() -> None:
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _modules()
        if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES
    ]
    assert not big, "\n".join(big)


def _long_functions(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[first - 2].strip() if first >= 2 else ""
        if above.startswith("# long:") and len(above) > len("# long:") + 10:
            continue
        out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is {length} lines")
    return out


def test_no_function_over_80_lines_without_a_reason() -> None:
    long = [entry for p in _modules() for entry in _long_functions(p)]
    assert not long, "\n".join(long)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n" + "    x = 1\n" * 80, ["f is 81 lines"]),
        ("# long: one table, read top to bottom\ndef f():\n" + "    x = 1\n" * 80, []),
        ("# long:\ndef f():\n" + "    x = 1\n" * 80, ["f is 81 lines"]),  # a reason is required
        ("def f():\n" + "    x = 1\n" * 79, []),
    ],
)
def test_the_function_rule_itself(tmp_path: Path, source: str, expected: list[str]) -> None:
    path = ROOT / "tests" / "unit" / "_house_probe.py"
    try:
        path.write_text(source, encoding="utf-8")
        found = [entry.split(": ", 1)[1] for entry in _long_functions(path)]
    finally:
        path.unlink()
    assert found == expected


def test_architecture_doc_and_readme_name_every_package() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    packages = sorted(
        str(p.parent.relative_to(ROOT))
        for p in (ROOT / "detector").glob("*/__init__.py")
        if p.parent.name != "__pycache__"
    )
    assert packages, "no packages found"
    for package in packages:
        assert f"`{package}/`" in doc, f"docs/architecture.md does not describe {package}/"
        assert f"`{package}/`" in readme, f"the README's layout does not list {package}/"
    for stage in STAGES:
        if stage.count(".") == 1 and (ROOT / stage.replace(".", "/")).is_dir():
            assert stage.replace(".", "/") in packages
