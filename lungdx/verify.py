"""`lungdx verify`: rerun the committed pipeline in a scratch clone and say, stage by stage,
whether it reproduces the committed dvc.lock.

dvc.lock records the md5 of every output a run wrote. A scratch clone of HEAD starts with no
outputs and an empty DVC cache, so `dvc repro` there runs every stage from the code, params
and seed alone; its new dvc.lock is then compared with the committed one, output by output.
For a metrics file that differs, the committed numbers are read from this project's DVC cache
(or from git, for metrics kept there), so the report shows how far each moved.

The clone goes beside the project (a hidden `.lungdx-verify-*` folder in its parent folder),
so a relative `dataset.source` such as `../shared/data/...` names the same folder there; it is
removed at the end unless `--keep`. What is identical across machines, and what is not, is in
docs/models.md#determinism.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import yaml

from .errors import LungdxError
from .readable import exact
from .stage_deps import StageDepsError, is_project_code, lock_stages

if TYPE_CHECKING:
    from types import FrameType
    from typing import TextIO


@dataclass
class StageCheck:
    """One stage of the rerun against the committed dvc.lock."""

    name: str
    differing: list[str] = field(default_factory=list)  # outputs whose md5 differs
    new: bool = False  # not in the committed dvc.lock
    stale_entry: bool = False  # the lock's entry was written by other code or params
    metric_deltas: dict[str, dict[str, tuple]] = field(default_factory=dict)  # file -> key -> (committed, now)
    unavailable: list[str] = field(default_factory=list)  # differing metrics files whose committed numbers are not here

    @property
    def identical(self) -> bool:
        return not self.new and not self.differing


def _git(root: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True)
    except FileNotFoundError as exc:
        raise LungdxError("git is not installed: lungdx verify clones the project with git") from exc
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise LungdxError(f"git {' '.join(args)} failed in {root}: {said}")
    try:
        return proc.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LungdxError(f"git {' '.join(args)} in {root} gave text that is not UTF-8: {exc.reason}") from exc


def _project_in_repo(root: Path) -> tuple[str, str]:
    """(the commit to verify, short, and the project's folder inside its git repository: '' at the
    top, 'proj/' for a project made with dvc init --subdir)."""
    if not (root / "dvc.yaml").is_file():
        raise LungdxError(f"{root}: no dvc.yaml here; run lungdx verify in the project's folder")
    try:
        prefix = _git(root, "rev-parse", "--show-prefix").strip()
    except LungdxError as exc:
        raise LungdxError(
            f"{root}: not in a git repository; lungdx verify reruns a commit: run it in the project's git checkout"
        ) from exc
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD").strip()
    except LungdxError as exc:
        raise LungdxError(
            f"{root}: the git repository has no commit yet; commit the project and its dvc.lock first"
        ) from exc
    return commit, prefix


def _check_targets(root: Path, targets: list[str]) -> None:
    """Stage names only (name, or name@key of a foreach stage), each one dvc.yaml has, before any
    clone is made: an option would reach dvc (`--dry` runs nothing), a typo would cost a clone."""
    try:
        stages = (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as exc:
        raise LungdxError(f"{root / 'dvc.yaml'}: cannot be read ({str(exc).splitlines()[0]})") from exc
    for target in targets:
        if target.startswith("-"):
            raise LungdxError(f"{target}: not a stage name; lungdx verify passes no options to dvc repro")
        if target.split("@")[0] not in stages or ("@" in target) != ("foreach" in (stages[target.split("@")[0]] or {})):
            raise LungdxError(f"{target}: not a stage of dvc.yaml; its stages: {', '.join(stages)}")


def _lock_stages(text: str, where: str) -> dict:
    """dvc.lock's stages, checked as lungdx.stage_deps checks them (a LungdxError here)."""
    try:
        return lock_stages(text, where)
    except StageDepsError as exc:
        raise LungdxError(str(exc)) from exc


def _entries(stage: dict, group: str) -> dict[str, dict]:
    return {entry["path"]: entry for entry in stage.get(group) or []}  # shape checked by _lock_stages


def _hash(entry: dict | None):
    return None if entry is None else (entry.get("md5"), entry.get("hash"))


def compare_locks(committed: dict, rerun: dict) -> list[StageCheck]:
    """Each stage the rerun ran, in its order, against the committed lock's entry."""
    checks = []
    for name, stage in rerun.items():
        check = StageCheck(name)
        before = committed.get(name)
        if before is None:
            check.new = True
        else:
            outs, outs_before = _entries(stage, "outs"), _entries(before, "outs")
            check.differing = [path for path in outs if _hash(outs[path]) != _hash(outs_before.get(path))]
            deps, deps_before = _entries(stage, "deps"), _entries(before, "deps")
            code = {path for path in deps if is_project_code(path)}
            check.stale_entry = (
                code != {p for p in deps_before if is_project_code(p)}
                or any(_hash(deps[p]) != _hash(deps_before.get(p)) for p in code)
                or stage.get("params") != before.get("params")
            )
        checks.append(check)
    return checks


def _numbers(doc, prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics JSON, by dotted key (accuracy_ci.lower)."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            out.update(_numbers(value, f"{prefix}{key}."))
        return out
    if isinstance(doc, (int, float)) and not isinstance(doc, bool):
        return {prefix[:-1]: doc}
    return {}


def _metrics_files(root: Path) -> set[str]:
    """The metrics files dvc.yaml declares (top-level `metrics:` and each stage's)."""
    doc = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}
    files = {m if isinstance(m, str) else next(iter(m)) for m in doc.get("metrics") or []}
    for stage in (doc.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        files |= {m if isinstance(m, str) else next(iter(m)) for m in body.get("metrics") or []}
    return files


def _committed_bytes(root: Path, cache: Path, path: str, entry: dict | None, prefix: str = "") -> bytes | None:
    """The committed content of output `path`: from git for one kept there, else from the DVC
    cache folder `cache` by the md5 dvc.lock records (the workspace file too, if it still has that md5)."""
    if entry is None:
        return None
    md5 = entry.get("md5")
    try:
        return subprocess.run(["git", "show", f"HEAD:{prefix}{path}"], cwd=root, capture_output=True, check=True).stdout
    except subprocess.CalledProcessError:
        pass
    if not md5:
        return None
    import hashlib

    workspace = root / path
    if workspace.is_file() and hashlib.md5(workspace.read_bytes()).hexdigest() == md5:
        return workspace.read_bytes()
    cached = cache / "files" / "md5" / md5[:2] / md5[2:]
    return cached.read_bytes() if cached.is_file() else None


def _cache_dir(root: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "dvc", "cache", "dir"], cwd=root, capture_output=True, text=True)
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else root / ".dvc" / "cache"


def add_metric_deltas(checks: list[StageCheck], root: Path, scratch: Path, committed: dict, prefix: str = "") -> None:
    """For each differing metrics file, the numbers that moved: committed -> rerun. `prefix`: the
    project's folder in its git repository."""
    metrics = _metrics_files(scratch)
    cache = None
    for check in checks:
        for path in [p for p in check.differing if p in metrics]:
            cache = cache or _cache_dir(root)  # one `dvc cache dir`, and none when no metric differs
            old = _committed_bytes(root, cache, path, _entries(committed.get(check.name, {}), "outs").get(path), prefix)
            try:
                before = _numbers(json.loads(old)) if old is not None else None
                now = _numbers(json.loads((scratch / path).read_text(encoding="utf-8")))
            except (ValueError, OSError):
                before = None
            if before is None:
                check.unavailable.append(path)
                continue
            check.metric_deltas[path] = {
                key: (before.get(key), now.get(key))
                for key in sorted({*before, *now})
                if before.get(key) != now.get(key)
            }


def _scratch_parent(root: Path, workdir: Path | None) -> Path:
    parent = workdir if workdir is not None else root.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise LungdxError(
            f"{parent}: not a folder lungdx verify can write its scratch clone into; give another with --workdir DIR"
        )
    return parent


def verify(
    root: Path, targets: list[str], workdir: Path | None = None, keep: bool = False, out: TextIO = sys.stdout
) -> tuple[list[StageCheck], str, Path | None]:
    """Rerun `dvc repro TARGETS` (all stages: none given) of HEAD in a scratch clone; return each
    stage's check, the commit verified, and the scratch clone if kept."""
    root = root.resolve()
    commit, prefix = _project_in_repo(root)
    _check_targets(root, targets)
    committed = _committed_lock(root, commit, prefix)
    if _git(root, "status", "--porcelain", "--untracked-files=no", ".").strip():
        print(
            f"verify: note: this folder has uncommitted changes; what is verified is commit {commit}",
            file=out,
            flush=True,
        )
    top = Path(_git(root, "rev-parse", "--show-toplevel").strip())
    scratch = Path(tempfile.mkdtemp(prefix=".lungdx-verify-", dir=_scratch_parent(top, workdir)))
    try:
        _git(root, "clone", "--quiet", str(top), str(scratch))
        project = scratch / prefix
        rerun = _rerun_lock(project, targets, commit, keep, out)
        checks = compare_locks(committed, rerun)
        add_metric_deltas(checks, root, project, committed, prefix)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return checks, commit, scratch / prefix if keep else None


def _committed_lock(root: Path, commit: str, prefix: str) -> dict:
    """The stages of the dvc.lock committed at HEAD (`prefix`: the project's folder in its repository)."""
    try:
        committed_text = _git(root, "show", f"HEAD:{prefix}dvc.lock")
    except LungdxError as exc:
        if "not UTF-8" in str(exc):
            raise
        raise LungdxError(
            f"commit {commit} has no dvc.lock to verify against: run dvc repro, then commit dvc.lock"
        ) from exc
    return _lock_stages(committed_text, f"dvc.lock of commit {commit}")


def _rerun_lock(project: Path, targets: list[str], commit: str, keep: bool, out: TextIO) -> dict:
    """Run dvc repro in the scratch clone's project, saying so on `out`; the stages of the dvc.lock it writes."""
    # The new dvc.lock then records the stages this run ran, and only those: an entry copied
    # from the commit's lock would compare equal to itself.
    (project / "dvc.lock").unlink()
    print(
        f"verify: running dvc repro{''.join(' ' + t for t in targets)} of commit {commit} in a scratch "
        f"clone ({project})",
        file=out,
        flush=True,
    )
    start = time.monotonic()
    returncode = _run_dvc_repro(project, targets)
    if returncode != 0:
        raise LungdxError(
            f"dvc repro failed in the scratch clone (exit {returncode}; its lines are "
            f"above){'; it is kept: ' + str(project) if keep else ''}"
        )
    print(f"verify: dvc repro took {time.monotonic() - start:.0f} s", file=out, flush=True)
    return _lock_stages((project / "dvc.lock").read_text(encoding="utf-8"), f"{project}/dvc.lock")


def _run_dvc_repro(project: Path, targets: list[str]) -> int:
    """`dvc repro --force TARGETS` in `project`, its output shown; its exit status. --force: every
    stage runs, even where a cache dir in .dvc/config already holds its outputs.

    dvc runs in its own process group, so that when verify is stopped (Ctrl-C, or SIGTERM, taken
    as Ctrl-C here) it can stop dvc and its stage as a terminal's Ctrl-C would, and wait for them
    to clean up before the scratch clone is removed: nothing keeps running in a deleted folder."""

    def interrupted(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", *targets], cwd=project, start_new_session=True
    )
    try:
        return proc.wait()
    except BaseException:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        for signum, grace in ((signal.SIGINT, 60), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, signum)
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _number(value: float | None) -> str:
    """A metric as its file holds it: verify shows moves smaller than the report's three decimals."""
    if value is None:
        return "absent"
    return str(value) if isinstance(value, int) else exact(value)


def _moved(before: float, now: float) -> str:
    """How far a metric moved, in its own form: +10 for a count, -0.00025 for a score."""
    return (
        f"{now - before:+d}" if isinstance(before, int) and isinstance(now, int) else exact(now - before, signed=True)
    )


def report(checks: list[StageCheck], commit: str) -> str:
    """What a person reads: one line per stage, then the numbers that moved."""
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"against the dvc.lock of commit {commit}:"]
    for check in checks:
        if check.new:
            lines.append(f"  {check.name:<{width}}  not in the committed dvc.lock (a new stage)")
            continue
        state = "identical" if check.identical else "differs: " + ", ".join(check.differing)
        lines.append(f"  {check.name:<{width}}  {state}")
        if check.stale_entry:
            lines.append(
                f"  {'':<{width}}  (its committed entry was written by other code or params: "
                "the lock is stale; regenerate it with dvc repro and commit dvc.lock)"
            )
        for path, deltas in check.metric_deltas.items():
            lines.append(f"  {'':<{width}}  {path}:" + ("" if deltas else " the same numbers (other bytes)"))
            key_width = max((len(key) for key in deltas), default=0)
            for key, (a, b) in deltas.items():
                delta = f" ({_moved(a, b)})" if a is not None and b is not None else ""
                lines.append(f"  {'':<{width}}    {key:<{key_width}}  {_number(a)} -> {_number(b)}{delta}")
        for path in check.unavailable:
            lines.append(
                f"  {'':<{width}}  {path}: the committed numbers are not in this project's DVC cache "
                "(dvc pull brings them from the project's remote, if it has one)"
            )
    same = sum(c.identical for c in checks)
    lines.append(
        f"{same} of {len(checks)} stages identical"
        + ("" if same == len(checks) else "; what can differ between machines: docs/models.md#determinism")
    )
    return "\n".join(lines)
