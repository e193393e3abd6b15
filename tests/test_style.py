"""The house style, checked: ruff's lint and format, mypy on the library, annotated public
functions, and short functions (settings in pyproject.toml; docs/development.md says how to run
them by hand)."""

import ast
import subprocess
import sys

import pytest

from tests.helpers import ROOT

MAX_LINES = 40  # a function over it does more than one thing, or says why it is one idea
ONE_IDEA = "# one idea:"


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("command", [("ruff", "check", "."), ("ruff", "format", "--check", ".")], ids=" ".join)
def test_ruff_finds_nothing(command):
    done = _tool(*command)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"


def test_mypy_finds_nothing_in_the_library():
    # pyproject.toml's [tool.mypy] names the files and the strictness; the cache is gitignored.
    done = _tool("mypy", "--no-error-summary")
    assert done.returncode == 0, done.stdout + done.stderr


def _functions():
    for path in sorted((ROOT / "lungdx").glob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path, lines, node


def test_public_functions_are_annotated():
    missing = []
    for path, _, node in _functions():
        if node.name.startswith("_") and not (node.name.startswith("__") and node.name.endswith("__")):
            continue  # private helpers may go bare; dunder methods (__init__, __call__) are public
        args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        unannotated = [a.arg for a in args if a.annotation is None and a.arg not in ("self", "cls")]
        unannotated += [f"*{a.arg}" for a in (node.args.vararg, node.args.kwarg) if a and a.annotation is None]
        if unannotated or node.returns is None:
            missing.append(
                f"{path.name}:{node.lineno} {node.name}: {unannotated or ''} {'' if node.returns else '-> ?'}"
            )
    assert not missing, "\n".join(missing)


def test_a_long_function_is_one_idea_and_says_why():
    """Over MAX_LINES, a function is split, or the line above its `def` (or its decorators)
    says in one line why it is one idea: `# one idea: ...`."""
    unexplained = []
    for path, lines, node in _functions():
        length = node.end_lineno - node.lineno + 1
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if length > MAX_LINES and not lines[first - 2].strip().startswith(ONE_IDEA):
            unexplained.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    assert not unexplained, "\n".join(unexplained)
