"""The project code each DVC stage can run, from the static import graph, checked against dvc.yaml.

DVC reruns a stage only when one of its listed deps changes, so a module missing from a
stage's deps is a stale result that `dvc status` calls up to date. A stage's code is the
module its `cmd` runs (`python -m stages.<name>`) and every project module that imports,
transitively, including imports inside functions (found with `ast`, without importing
anything), plus the `__init__.py` of each package on the way (Python runs those too).

    python -m lungdx.stage_deps           # report what dvc.yaml misses or lists in vain; exit 1 if any
    python -m lungdx.stage_deps --write   # rewrite each stage's code deps in dvc.yaml to match
    python -m lungdx.stage_deps --lock    # also: does dvc.lock record these very files? exit 1 if not

Only the deps under the project's packages (lungdx/, stages/) are ours; data deps
(data/raw, models/...) and any other file are left as they are. Per-stage lists, not the
whole package, so that editing the Grad-CAM code reruns `gradcam`, not the download.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

PACKAGES = ("lungdx", "stages")  # the project's own code; every other import is a library
DYNAMIC_IMPORTS = {"import_module", "__import__", "run_module", "run_path", "spec_from_file_location"}


class StageDepsError(Exception):
    """dvc.yaml or the code is in a shape this tool cannot follow; the message says what to do."""


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


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """ast.walk, leaving out the bodies of `if TYPE_CHECKING:`: imports for annotations only,
    which never run (so they are no code dep, and no stage runs the module they name)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def imported_modules(root: Path, path: Path) -> set[str]:
    """Dotted names of project modules that `path` imports anywhere in the code it runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _dotted_name(root, path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in runtime_nodes(tree):
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
            if base in ("importlib", "importlib.util", "runpy") and {a.name for a in node.names} & DYNAMIC_IMPORTS:
                _refuse_dynamic(root, path, node)
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in DYNAMIC_IMPORTS:
                _refuse_dynamic(root, path, node)
    return {name for name in found if _module_file(root, name)}


def _refuse_dynamic(root: Path, path: Path, node) -> None:
    raise StageDepsError(
        f"{path.relative_to(root)}:{node.lineno}: a dynamic import; the import graph cannot "
        "see what it loads: import the module statically"
    )


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
            module = _module_file(root, name)
            if module is not None:  # always: imported_modules keeps only the names that have a file
                todo.append(module)
            todo.extend(_package_inits(root, name))
    return {p.relative_to(root).as_posix() for p in seen}


def _stages(root: Path) -> dict:
    try:
        stages = yaml.safe_load((Path(root) / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise StageDepsError(f"{Path(root) / 'dvc.yaml'}: no readable stages ({exc})") from exc
    for name, stage in stages.items():
        if not isinstance(stage, dict) or "cmd" not in _body(stage):
            raise StageDepsError(
                f"dvc.yaml: stage {name} has no cmd (matrix stages are not supported); list its code deps by hand"
            )
    return {name: _body(stage) for name, stage in stages.items()}


def _body(stage) -> dict:
    """A stage's cmd, deps and outs: under `do:` for a foreach stage (one stage per item, the same code)."""
    if isinstance(stage, dict) and "foreach" in stage:
        do = stage.get("do")
        return do if isinstance(do, dict) else {}
    return stage if isinstance(stage, dict) else {}


def stage_script(root: Path, name: str, cmd: str) -> Path:
    """The project file a stage's cmd runs: `python -m pkg.module` or `python path/to/file.py`."""
    words = shlex.split(cmd) if isinstance(cmd, str) else []
    if len(words) >= 2 and re.fullmatch(r"python[\d.]*", Path(words[0]).name):
        if words[1] == "-m" and len(words) >= 3 and (found := _module_file(Path(root), words[2])):
            return found
        if words[1].endswith(".py") and (Path(root) / words[1]).is_file():
            return Path(root) / words[1]
    raise StageDepsError(
        f"dvc.yaml: stage {name} runs {cmd!r}, not a Python module of this project "
        f"({', '.join(PACKAGES)}); list its code deps by hand"
    )


def is_project_code(dep: str) -> bool:
    """A dep that is a file of the project's packages (lungdx/, stages/): its code, not its data."""
    return dep.endswith(".py") and dep.split("/")[0] in PACKAGES


def declared_code_deps(root: Path) -> dict[str, set[str]]:
    """Per stage in dvc.yaml: its deps that are files of the project's packages."""
    return {
        name: {d for d in stage.get("deps") or [] if isinstance(d, str) and is_project_code(d)}
        for name, stage in _stages(root).items()
    }


def needed_code_deps(root: Path) -> dict[str, set[str]]:
    return {
        name: reachable_files(root, stage_script(root, name, stage["cmd"])) for name, stage in _stages(root).items()
    }


def differences(root: Path) -> dict[str, dict[str, list[str]]]:
    """Per stage whose code deps are wrong: {'missing': [...], 'extra': [...]}."""
    declared, needed = declared_code_deps(root), needed_code_deps(root)
    out = {}
    for name in declared:
        missing, extra = sorted(needed[name] - declared[name]), sorted(declared[name] - needed[name])
        if missing or extra:
            out[name] = {"missing": missing, "extra": extra}
    return out


def stale_lock(root: Path) -> list[str]:
    """What makes dvc.lock describe other code or params than the files here, one line each: a
    stage whose recorded code deps (lungdx/, stages/) are not dvc.yaml's, a recorded file that no
    longer exists, one whose md5 (as DVC 3 records it: of the file's bytes) is not the file's, or
    a recorded params.yaml value that is not the one there now. [] when it matches; a stage of
    dvc.yaml missing from the lock counts too (foreach instances aside)."""
    import hashlib

    from .params import PARAMS_FILE

    lock = lock_stages(_read(Path(root) / "dvc.lock"), Path(root) / "dvc.lock")
    declared, problems = declared_code_deps(root), []
    raw = _yaml(_read(Path(root) / "dvc.yaml"), Path(root) / "dvc.yaml")["stages"]
    params = _params(Path(root))
    for name in declared:  # a foreach over an empty mapping has no instance to record
        if name not in lock and "foreach" not in raw[name]:
            problems.append(f"dvc.lock: stage {name} of dvc.yaml is not recorded")
    for recorded, stage in lock.items():
        name = recorded.split("@")[0]
        deps = {d["path"]: d for d in stage.get("deps") or [] if is_project_code(d["path"])}
        if name not in declared:
            problems.append(f"dvc.lock: stage {recorded} is not in dvc.yaml")
            continue
        for path in sorted(declared[name] - set(deps)):
            problems.append(f"dvc.lock: stage {recorded} does not record {path}, which dvc.yaml lists")
        for path, dep in sorted(deps.items()):
            file = Path(root) / path
            if not file.is_file():
                problems.append(f"dvc.lock: stage {recorded} records {path}, which does not exist")
            elif path not in declared[name]:
                problems.append(f"dvc.lock: stage {recorded} records {path}, which dvc.yaml no longer lists")
            elif dep.get("md5") != hashlib.md5(file.read_bytes()).hexdigest():
                problems.append(f"dvc.lock: stage {recorded} records another {path} than the one here")
        for key, value in ((stage.get("params") or {}).get(PARAMS_FILE) or {}).items():  # as dvc.lock names it
            if _lookup(params, key) != value:
                problems.append(
                    f"dvc.lock: stage {recorded} records params.yaml's {key} = {value!r}, not "
                    f"{_lookup(params, key)!r} as now"
                )
    return problems


def _yaml(text: str, where: str | Path) -> Any:
    """The YAML value of `text`, of any type (a mapping, a list, a scalar); `where` names it if it does not parse."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageDepsError(f"{where}: not readable ({first})") from exc


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StageDepsError(f"{path}: not readable ({exc})") from exc


def _params(root: Path) -> dict:
    """params.yaml's values, read by lungdx.params (its only reader)."""
    from . import params
    from .errors import LungdxError

    try:
        return params.read(root / params.PARAMS_FILE)
    except LungdxError as exc:
        raise StageDepsError(str(exc)) from exc


def lock_stages(text: str, where: str | Path) -> dict:
    """The stages of dvc.lock's text, each checked to be in the shape DVC writes (deps and outs:
    lists of {path, ...}; params: {file: {key: value}}), so that a damaged lock is one line, not a
    traceback; `where` names it in that line."""
    lock = _yaml(text, where)
    stages = lock.get("stages") if isinstance(lock, dict) else None
    if not isinstance(stages, dict):
        raise StageDepsError(f"{where}: no stages; regenerate it with dvc repro")

    def entries(value: object) -> bool:
        items = value or []
        return isinstance(items, list) and all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in items)

    for name, stage in stages.items():
        if not (
            isinstance(stage, dict)
            and entries(stage.get("deps"))
            and entries(stage.get("outs"))
            and isinstance(stage.get("params") or {}, dict)
            and all(isinstance(v, dict) for v in (stage.get("params") or {}).values())
        ):
            raise StageDepsError(
                f"{where}: stage {name} is not in the shape DVC writes (deps and outs lists "
                "of paths with md5s, params a mapping per file); regenerate it with dvc repro"
            )
    return stages


_MISSING = "(absent)"


def _lookup(params, dotted: str):
    """params.yaml's value at a dotted key, as DVC records it in dvc.lock."""
    for part in dotted.split("."):
        if not isinstance(params, dict) or part not in params:
            return _MISSING
        params = params[part]
    return params


def rewrite(root: Path) -> str:
    """dvc.yaml's text with each stage's code deps replaced by what it runs (sorted, first).

    Text-based, to keep comments and layout: inside a stage's `deps:` list the lines naming
    lungdx/ or stages/ files are dropped and the needed ones written at the top; every other
    line stays. The result is parsed again and must differ from the original only there.
    """
    text = (Path(root) / "dvc.yaml").read_bytes().decode("utf-8")  # as it is: \r\n kept
    needed = needed_code_deps(root)
    new = "".join(_rewritten_lines(text, needed))
    _check_rewrite(root, text, new, needed)
    return new


def _rewritten_lines(text: str, needed: dict[str, set[str]]) -> list[str]:
    """The lines of dvc.yaml's `text`, the code deps of each stage in `needed` replaced (rewrite's pass)."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    level = _stage_indent(text)
    out: list[str] = []
    stage: str | None = None
    deps_indent: int | None = None
    for i, line in enumerate(lines):
        bare = line.rstrip("\r\n")
        indent, content = len(bare) - len(bare.lstrip()), bare.strip()
        if deps_indent is not None and _ends_list(indent, content, deps_indent):
            deps_indent = None  # the deps list ended
        if deps_indent is not None:
            if not _is_code_item(content):
                out.append(line)  # a data dep, a comment, another file: kept; ours are written anew
            continue
        head = re.fullmatch(r"(\s*)([\w.-]+):\s*(#.*)?", bare)
        if head and not head.group(1):
            stage = None  # a top-level key: out of the stage we were in
        if head and len(head.group(1)) == level and head.group(2) in needed:
            stage = head.group(2)
        elif head and head.group(2) == "deps" and stage is not None:
            deps_indent = len(head.group(1))
            out.append(line)
            pad = " " * _item_indent(lines[i + 1 :], deps_indent)
            out.extend(f"{pad}- {f}{newline}" for f in sorted(needed[stage]))
            continue
        out.append(line)
    return out


def _ends_list(indent: int, content: str, deps_indent: int) -> bool:
    """Whether a line (its indentation and stripped text) ends the deps list at deps_indent."""
    if not content or content.startswith("#"):
        return False
    return indent < deps_indent or (indent == deps_indent and not content.startswith("-"))


def _is_code_item(content: str) -> bool:
    """Whether a line of a deps list (stripped) is an item naming a file of the project's code."""
    item = re.fullmatch(r"-\s+(['\"]?)([^'\"#]+?)\1\s*(#.*)?", content)
    return bool(item and is_project_code(item.group(2)))


def _stage_indent(text: str) -> int | None:
    """The indentation of the stage names (the keys under `stages:`)."""
    match = re.search(r"^stages:[^\n]*\n(?:[ \t]*(?:#[^\n]*)?\r?\n)*( +)\S", text, re.M)
    return len(match.group(1)) if match else None


def _item_indent(following: list[str], deps_indent: int) -> int:
    """The indentation of the list items under a deps: key, in the file's own style."""
    for line in following:
        content = line.strip()
        if content.startswith("-"):
            return len(line) - len(line.lstrip())
        if content and not content.startswith("#"):
            break
    return deps_indent + 2


def _check_rewrite(root: Path, old: str, new: str, needed: dict[str, set[str]]) -> None:
    """The rewrite changed exactly the code deps, and they are now right; else refuse."""
    before, after = yaml.safe_load(old), yaml.safe_load(new)
    for name, whole in after["stages"].items():
        stage, old_stage = _body(whole), _body(before["stages"][name])
        deps = stage.get("deps") or []
        ours = [d for d in deps if is_project_code(d)]
        others = [d for d in deps if not is_project_code(d)]
        old_others = [d for d in old_stage.get("deps") or [] if not is_project_code(d)]
        stage_without: dict | None = {k: v for k, v in stage.items() if k != "deps"}
        old_without = {k: v for k, v in old_stage.items() if k != "deps"}
        if "foreach" in whole and {k: v for k, v in whole.items() if k != "do"} != {
            k: v for k, v in before["stages"][name].items() if k != "do"
        }:
            stage_without = None  # a foreach stage's other keys (foreach itself) changed: refuse below
        if (
            sorted(ours) != sorted(needed[name])
            or len(ours) != len(set(ours))
            or others != old_others
            or stage_without != old_without
        ):
            raise StageDepsError(
                f"dvc.yaml: could not rewrite the deps of stage {name} safely (an unusual "
                f"layout?); list these there by hand: {', '.join(sorted(needed[name]))}"
            )
    if {k: v for k, v in after.items() if k != "stages"} != {k: v for k, v in before.items() if k != "stages"}:
        raise StageDepsError("dvc.yaml: the rewrite touched more than stage deps; nothing was written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lungdx.stage_deps", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the code deps of dvc.yaml to match")
    parser.add_argument("--root", type=Path, default=Path("."), help="the project (default: .)")
    parser.add_argument(
        "--lock", action="store_true", help="also check that dvc.lock records the code here (see stale_lock)"
    )
    args = parser.parse_args(argv)
    try:
        if args.write:
            from .atomic import write_text

            new = rewrite(args.root)
            if new != (args.root / "dvc.yaml").read_bytes().decode("utf-8"):
                write_text(args.root / "dvc.yaml", new)
        wrong = differences(args.root)
        stale = stale_lock(args.root) if args.lock else []
    except StageDepsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, diff in wrong.items():
        for f in diff["missing"]:
            print(f"dvc.yaml: stage {name} runs {f} but does not list it in deps")
        for f in diff["extra"]:
            print(f"dvc.yaml: stage {name} lists {f} in deps but never runs it")
    if wrong:
        print("fix: python -m lungdx.stage_deps --write", file=sys.stderr)
    for line in stale:
        print(line)
    if stale:
        print(
            "fix: regenerate dvc.lock from a full default run in a fresh clone (docs/development.md#dvclock)",
            file=sys.stderr,
        )
    return 1 if wrong or stale else 0


if __name__ == "__main__":
    sys.exit(main())
