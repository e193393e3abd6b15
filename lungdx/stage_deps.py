"""The project code each DVC stage can run, from the static import graph, checked against dvc.yaml.

DVC reruns a stage only when one of its listed deps changes, so a module missing from a
stage's deps is a stale result that `dvc status` calls up to date. A stage's code is
`stages/<name>.py` and every project module it imports, transitively, including imports
inside functions (found with `ast`, without importing anything), plus the `__init__.py`
of each package on the way (Python runs those too).

    python -m lungdx.stage_deps           # report what dvc.yaml misses or lists in vain; exit 1 if any
    python -m lungdx.stage_deps --write   # rewrite each stage's code deps in dvc.yaml to match

Only the `*.py` lines of each stage's `deps:` are ours; data deps (data/raw, models/...)
are left as they are. Per-stage lists, not the whole package, so that editing the
Grad-CAM code reruns `gradcam` alone, not the download.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

PACKAGES = ("lungdx", "stages")  # the project's own code; every other import is a library


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of a project module `a.b.c` (a module file or a package's __init__.py)."""
    if dotted.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_inits(root: Path, dotted: str) -> list[Path]:
    """__init__.py of every package that importing `dotted` runs first (a, a.b, ...)."""
    parts = dotted.split(".")
    inits = (root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts)))
    return [p for p in inits if p.is_file()]


def _dotted_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(root: Path, path: Path) -> set[str]:
    """Dotted names of project modules that `path` imports anywhere in its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _dotted_name(root, path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import name` may import the submodule pkg.name
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            raise ValueError(f"{path.relative_to(root)}:{node.lineno}: a dynamic import; the import graph "
                             "cannot see it, so list what it loads by hand or import it statically")
    return {name for name in found if _module_file(root, name)}


def reachable_files(root: Path, script: Path) -> set[str]:
    """Every project file that running `script` (as python -m) can execute, relative to root."""
    root, script = Path(root).resolve(), Path(script).resolve()
    seen: set[Path] = set()
    todo = [script, *_package_inits(root, _dotted_name(root, script))]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(root, path):
            todo.append(_module_file(root, name))
            todo.extend(_package_inits(root, name))
    return {p.relative_to(root).as_posix() for p in seen}


def declared_code_deps(root: Path) -> dict[str, set[str]]:
    """Per stage in dvc.yaml: the *.py files among its deps."""
    stages = yaml.safe_load((Path(root) / "dvc.yaml").read_text())["stages"]
    return {name: {d for d in stage.get("deps", []) if d.endswith(".py")} for name, stage in stages.items()}


def stage_script(root: Path, name: str) -> Path:
    return Path(root) / "stages" / f"{name}.py"


def differences(root: Path) -> dict[str, dict[str, list[str]]]:
    """Per stage whose code deps are wrong: {'missing': [...], 'extra': [...]}."""
    out = {}
    for name, declared in declared_code_deps(root).items():
        needed = reachable_files(root, stage_script(root, name))
        missing, extra = sorted(needed - declared), sorted(declared - needed)
        if missing or extra:
            out[name] = {"missing": missing, "extra": extra}
    return out


def rewrite(root: Path) -> str:
    """dvc.yaml's text with each stage's *.py deps replaced by its reachable files (sorted, first)."""
    text = (Path(root) / "dvc.yaml").read_text()
    out, stage, in_deps = [], None, False
    for line in text.splitlines(keepends=True):
        head = re.match(r"^  (\w[\w-]*):\s*$", line)
        if head:
            stage, in_deps = head.group(1), False
        elif re.match(r"^    deps:\s*$", line) and stage:
            in_deps = True
            out.append(line)
            out.extend(f"      - {f}\n" for f in sorted(reachable_files(root, stage_script(root, stage))))
            continue
        elif in_deps and not re.match(r"^      - ", line):
            in_deps = False
        if in_deps and line.strip().endswith(".py"):
            continue  # replaced above
        out.append(line)
    return "".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lungdx.stage_deps", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the code deps of dvc.yaml to match")
    parser.add_argument("--root", type=Path, default=Path("."), help="the project (default: .)")
    args = parser.parse_args(argv)
    if args.write:
        (args.root / "dvc.yaml").write_text(rewrite(args.root))
    wrong = differences(args.root)
    for name, diff in wrong.items():
        for f in diff["missing"]:
            print(f"dvc.yaml: stage {name} runs {f} but does not list it in deps")
        for f in diff["extra"]:
            print(f"dvc.yaml: stage {name} lists {f} in deps but never runs it")
    if wrong:
        print("fix: python -m lungdx.stage_deps --write", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
