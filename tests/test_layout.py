"""The test code's layout: what tests share lives in `testing/`, never in a test module.

A test module that imports another runs that module's set-up (its constants, its fixtures'
definitions) as a side effect and ties the two together; `benchmarks/` and `e2e/` importing
from `tests/` made the suite a library. Read from the source (the AST), so a lazy import
inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from testing import CHECKOUT


def imported_modules(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """Every module a file of `package` imports, with its line: `import a.b` and `from a.b
    import c` give `a.b`; `from a import b` gives `a.b` too (b may be a module); relative
    imports are resolved against `package`."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (CHECKOUT / folder).rglob("*.py"))


def test_no_test_module_imports_another_and_only_tests_import_tests() -> None:
    offending = []
    for path in python_files("tests", "testing", "benchmarks", "e2e"):
        package = path.parent.relative_to(CHECKOUT).parts
        for line, module in imported_modules(path.read_text(), package):
            if module == "tests" or module.startswith("tests."):
                offending.append(f"{path.relative_to(CHECKOUT)}:{line} imports {module}")
    assert offending == [], "shared test code belongs in testing/:\n" + "\n".join(offending)


def test_the_check_sees_every_form_of_import() -> None:
    """It can fail: each way of writing an import of a test module is found."""
    source = (
        "import tests.test_api\n"
        "from tests import test_api\n"
        "from tests.test_api import raw_request\n"
        "from . import test_events as local\n"
        "def later():\n"
        "    from .test_chart import CHART\n"
    )
    seen = [module for _, module in imported_modules(source, ("tests",))]
    for module in ("tests.test_api", "tests.test_api.raw_request", "tests.test_events",
                   "tests.test_chart"):
        assert module in seen, seen
    assert [m for _, m in imported_modules("import testing.hub\n", ("tests",))] == [
        "testing.hub"
    ]
