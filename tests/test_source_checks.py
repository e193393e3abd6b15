"""Careless and hostile sources for the download stage (lungdx.source_checks): a source inside
the project, one class folder given as the source, links and special files, zip bombs, and
sources larger than the free space. Each refusal happens before anything is written."""

import contextlib
import errno
import json
import os
import resource
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import pytest
import yaml

from lungdx.atomic import DiskFull
from lungdx.download import download
from lungdx.errors import LungdxError
from lungdx.source_checks import ZIP_LIMITS, ZipLimits
from tests.helpers import (
    ROOT,
    make_flat_dataset,
    make_kaggle_dataset,
    require_private_mounts,
    settings,
    shared,
    tree_hashes,
    zip_folder,
)

FILE_SIZE_CAP = 64 << 20


def source_settings(source):
    """The download stage's settings, params.yaml's, with dataset.source = `source`."""
    return settings({"seed": 1, "dataset.source": str(source)}).download


@contextlib.contextmanager
def file_size_cap():
    """No file this process writes may grow past 64 MiB meanwhile (RLIMIT_FSIZE; Python ignores
    SIGXFSZ, so a write past it fails with EFBIG): if a check under test were missing, the test
    fails fast instead of filling the disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_CAP, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def everything(root: Path) -> tuple[list[str], dict]:
    """Every path below root (folders, links and pipes too) and the hashes of its files."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")), tree_hashes(root)


# A zip written by hand, so that its central directory can declare what a hostile zip declares.


def crc32_of_zeros(n: int) -> int:
    """zlib.crc32(bytes(n)) without making the bytes: the CRC register advanced over n zero
    bytes by repeated squaring of the one-bit operator, as zlib's crc32_combine does."""

    def times(mat, vec):
        out, i = 0, 0
        while vec:
            if vec & 1:
                out ^= mat[i]
            vec, i = vec >> 1, i + 1
        return out

    def square(mat):
        return [times(mat, row) for row in mat]

    op = [0xEDB88320] + [1 << i for i in range(31)]  # one zero bit
    op = square(square(square(op)))  # one zero byte
    reg = 0xFFFFFFFF
    while n:
        if n & 1:
            reg = times(op, reg)
        op, n = square(op), n >> 1
    return reg ^ 0xFFFFFFFF


def deflated(content: bytes) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(content) + co.flush()


def entry(name: str, content: bytes = b"", mode: int = 0o100644, **declared) -> dict:
    return {
        "name": name,
        "data": deflated(content),
        "crc": zlib.crc32(content),
        "size": len(content),
        "mode": mode,
        **declared,
    }


def zeros_entry(name: str, size: int) -> dict:
    """`size` zero bytes, deflated for real (so it does inflate to that) in well under a second:
    after a full flush deflate restarts, so 1 MiB compressed once is repeated."""
    mib, rest = divmod(size, 1 << 20)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(bytes(1 << 20)) + co.flush(zlib.Z_FULL_FLUSH)
    data = block * mib + co.compress(bytes(rest)) + co.flush()
    return {"name": name, "data": data, "crc": crc32_of_zeros(size), "size": size, "mode": 0o100644}


def write_zip(path: Path, entries: list[dict]) -> Path:
    """A plain zip of deflated entries. Each entry may override what the central directory
    declares (`size`, `packed`, `crc`) and may reuse the data of an earlier one (`same_as`)."""
    body, central, offsets = bytearray(), bytearray(), {}
    for e in entries:
        name = e["name"].encode()
        packed = e.get("packed", len(e["data"]))
        if "same_as" in e:
            offsets[e["name"]] = offsets[e["same_as"]]
        else:
            offsets[e["name"]] = len(body)
            body += (
                struct.pack(
                    "<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, e["crc"], len(e["data"]), e["size"], len(name), 0
                )
                + name
                + e["data"]
            )
        central += (
            struct.pack(
                "<4s6H3I5HII",
                b"PK\x01\x02",
                0x031E,
                20,
                0,
                8,
                0,
                0x21,
                e["crc"],
                packed,
                e["size"],
                len(name),
                0,
                0,
                0,
                0,
                e["mode"] << 16,
                offsets[e["name"]],
            )
            + name
        )
    path.write_bytes(
        bytes(body)
        + bytes(central)
        + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0)
    )
    return path


def small_classes(n: int = 2) -> list[dict]:
    return [entry(f"{cls}/images/{cls}-{i}.png", os.urandom(200)) for cls in ("COVID", "Normal") for i in range(n)]


def test_crc32_of_zeros_matches_zlib():
    for n in (0, 1, 7, 1000, (1 << 20) + 3):
        assert crc32_of_zeros(n) == zlib.crc32(bytes(n))


# --- 1. a source inside the project -------------------------------------------------------


def pipeline_project(root: Path, outs_as_mappings: bool) -> Path:
    """A project folder with this project's dvc.yaml (its outs as strings or as one-key
    mappings), .dvc/ and .git/, and a previous download in data/raw."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage in doc["stages"].values():
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]
        stage["outs"] = [{o: {"persist": True}} for o in outs] if outs_as_mappings else outs
    root.mkdir(parents=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (root / ".dvc" / "cache").mkdir(parents=True)
    (root / ".git").mkdir()
    download(
        source_settings(make_flat_dataset(root.parent / "earlier", {"A": 2, "B": 2})),
        root / "data" / "raw",
        project_root=root,
    )
    return root


INSIDE = {  # case: (where the images are, relative to the project; what dataset.source is; the message)
    "in data/raw": (
        "data/raw/covid",
        "data/raw/covid",
        "is inside data/raw, an output of this pipeline (stage download): DVC deletes or replaces",
    ),
    "data/raw itself": (None, "data/raw", "is data/raw, an output of this pipeline (stage download)"),
    "in another output": (
        "data/prepared/mine",
        "data/prepared/mine",
        "is inside data/prepared, an output of this pipeline (stage prepare)",
    ),
    "a zip in an output": ("models/x", "models/x/data.zip", "is inside models/model.keras"),
    "the project itself": (None, ".", "is the project itself"),
    "a folder holding the project": (None, "..", "contains the project"),
    "a folder holding an output": ("data/covid", "data", "contains data/raw, an output of this pipeline"),
    "in .dvc": (".dvc/cache/covid", ".dvc/cache/covid", "is inside .dvc/"),
    "in .git": (".git/covid", ".git/covid", "is inside .git/"),
    "a link into data/raw": ("data/raw/covid", "LINK", "is inside data/raw, an output of this pipeline"),
}


@pytest.mark.parametrize("outs_as_mappings", [False, True], ids=["outs-strings", "outs-mappings"])
@pytest.mark.parametrize("case", list(INSIDE))
def test_a_source_inside_the_project_is_refused_before_anything_is_touched(
    tmp_path, monkeypatch, case, outs_as_mappings
):
    project = pipeline_project(tmp_path / "project", outs_as_mappings)
    images, value, message = INSIDE[case]
    if images:
        make_flat_dataset(project / images, {"COVID": 2, "Normal": 2})
    if case == "a zip in an output":
        zip_folder(project / images, project / value)
        (project / "models" / "model.keras").mkdir()  # the output models/model.keras, here a folder
        shutil.move(project / value, project / "models" / "model.keras" / "data.zip")
        value = "models/model.keras/data.zip"
    if value == "LINK":  # outside the project, resolving into data/raw
        (tmp_path / "link").symlink_to(project / images)
        value = str(tmp_path / "link")
    monkeypatch.chdir(project)  # stages run from the project root; relative sources are relative to it
    before = everything(tmp_path)
    with pytest.raises(LungdxError) as err:
        download(source_settings(value), "data/raw", project_root=project)
    msg = str(err.value)
    assert msg.startswith(f"dataset.source = {value!r} ") and message in msg, msg
    assert "point dataset.source" in msg
    assert everything(tmp_path) == before, "nothing may be touched: not data/raw, not the source"


def test_a_bind_mounted_alias_of_data_raw_is_refused_too(tmp_path):
    """Paths alone cannot see that /elsewhere is data/raw mounted a second time; the folders'
    device and inode numbers can."""
    require_private_mounts()
    project = pipeline_project(tmp_path / "project", outs_as_mappings=True)
    alias = tmp_path / "alias"
    alias.mkdir()
    before = tree_hashes(project / "data" / "raw")
    script = (
        "import sys; from lungdx.download import download; from lungdx.errors import LungdxError\n"
        "from tests.helpers import settings\n"
        "try:\n    download(settings({'seed': 1, 'dataset.source': sys.argv[1]}).download, "
        "sys.argv[2] + '/data/raw', project_root=sys.argv[2])\nexcept LungdxError as exc:\n    print(exc)"
    )
    proc = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            f'mount --bind "$2/data/raw" "$1" && exec "{sys.executable}" -c "$0" "$1" "$2"',
            script,
            str(alias),
            str(project),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "is data/raw, an output of this pipeline" in proc.stdout, proc.stdout + proc.stderr
    assert tree_hashes(project / "data" / "raw") == before


def test_a_source_elsewhere_inside_the_project_is_allowed(tmp_path, monkeypatch):
    project = pipeline_project(tmp_path / "project", outs_as_mappings=True)
    make_flat_dataset(project / "mydata", {"COVID": 2, "Normal": 3})
    before = tree_hashes(project / "mydata")
    monkeypatch.chdir(project)
    record = download(source_settings("mydata"), "data/raw", project_root=project)
    assert record["classes"] == ["COVID", "Normal"] and record["files"] == 5
    assert tree_hashes(project / "mydata") == before


def test_a_source_inside_the_output_folder_is_refused_even_outside_a_project(tmp_path):
    out = tmp_path / "raw"
    download(source_settings(make_flat_dataset(tmp_path / "a", {"A": 2, "B": 2})), out, project_root=tmp_path)
    make_flat_dataset(out / "mine", {"C": 2, "D": 2})
    before = everything(tmp_path)
    with pytest.raises(LungdxError, match="is inside the output folder .* of the download, which it replaces whole"):
        download(source_settings(out / "mine"), out, project_root=tmp_path)
    with pytest.raises(
        LungdxError, match="contains the output folder .* of the download: it would read its own output"
    ):
        download(source_settings(tmp_path), out, project_root=tmp_path)
    assert everything(tmp_path) == before


def test_an_unreadable_dvc_yaml_is_one_clear_line(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: [unclosed\n")
    src = make_flat_dataset(tmp_path.parent / f"{tmp_path.name}-src", {"A": 2, "B": 2})
    with pytest.raises(
        LungdxError, match=r"dvc.yaml: cannot be read \(.*\); fix it .*; until then dataset.source cannot be checked"
    ):
        download(source_settings(src), tmp_path / "raw", project_root=tmp_path)
    assert not (tmp_path / "raw").exists()


# --- 2. one class folder as the source ------------------------------------------------------


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_single_kaggle_class_folder_as_source_is_refused(tmp_path, as_zip):
    src = make_kaggle_dataset(tmp_path / "src", {"COVID": 3, "Normal": 3})
    source = zip_folder(src / "COVID", tmp_path / "COVID.zip") if as_zip else src / "COVID"
    before = tree_hashes(tmp_path)
    with pytest.raises(LungdxError) as err:
        download(source_settings(source), tmp_path / "raw")
    assert str(err.value) == (
        f"{source} looks like one class folder of the Kaggle layout (it holds images/ and "
        "masks/); point dataset.source at the folder that holds the class folders "
        "(COVID/, Normal/, ...)"
    )
    assert tree_hashes(tmp_path) == before and not (tmp_path / "raw").exists()


# --- 3 and 4. links and special files: skipped, warned about, listed -----------------------


def test_symlinks_and_special_files_in_a_source_are_skipped_and_listed(tmp_path, monkeypatch, capsys):
    src = make_flat_dataset(tmp_path / "src", {"COVID": 3, "Normal": 3})
    outside = make_flat_dataset(tmp_path / "outside", {"Lung_Opacity": 2})
    covid, normal = src / "COVID", src / "Normal"
    (covid / "passwd.png").symlink_to("/etc/passwd")
    (covid / "zero.png").symlink_to("/dev/zero")  # would copy until the disk is full
    (covid / "dangling.png").symlink_to("gone.png")
    (covid / "loop-a.png").symlink_to("loop-b.png")
    (covid / "loop-b.png").symlink_to("loop-a.png")
    (covid / "inside.png").symlink_to("../Normal/Normal-1.png")  # a regular file inside the source: taken
    os.mkfifo(covid / "pipe.png")  # would block the stage forever
    (normal / "to-pipe.png").symlink_to("../COVID/pipe.png")
    (normal / "outside").symlink_to(outside / "Lung_Opacity")  # a linked folder: not followed
    (src / "Lung_Opacity").symlink_to(outside / "Lung_Opacity")  # a linked class folder: not followed
    monkeypatch.chdir(normal)  # a relative name: socket paths are limited to 108 bytes
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("sock.png")
    monkeypatch.chdir(tmp_path)
    before = everything(src)

    # Were the pipe opened blocking, this writer would unblock it every 2 s: the test fails, never hangs.
    done = threading.Event()

    def unblock():
        while not done.wait(2):
            with contextlib.suppress(OSError):  # ENXIO: nobody is reading it, as it should be
                os.close(os.open(covid / "pipe.png", os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=unblock, daemon=True).start()
    try:
        with file_size_cap():  # the link to /dev/zero, were it read, fails at 64 MiB
            record = download(source_settings(src), tmp_path / "raw")
    finally:
        done.set()
        sock.close()

    expected = {
        "COVID/dangling.png": "dangling symbolic link (its target gone.png does not exist)",
        "COVID/loop-a.png": "symbolic link that cannot be followed (loop-b.png: ",
        "COVID/loop-b.png": "symbolic link that cannot be followed (loop-a.png: ",
        "COVID/passwd.png": f"symbolic link to {Path('/etc/passwd').resolve()}, outside the source",
        "COVID/pipe.png": "named pipe (FIFO), not a regular file",
        "COVID/zero.png": "symbolic link to /dev/zero, outside the source",
        "Lung_Opacity": "symbolic link to a folder, not followed",
        "Normal/outside": "symbolic link to a folder, not followed",
        "Normal/sock.png": "socket, not a regular file",
        "Normal/to-pipe.png": (
            f"symbolic link to {covid.resolve() / 'pipe.png'}, a named pipe (FIFO), not a regular file"
        ),
    }
    listed = {s["path"]: s["reason"] for s in record["skipped"]}
    assert sorted(listed) == sorted(expected)
    assert all(listed[p].startswith(reason) for p, reason in expected.items()), listed
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["skipped"] == record["skipped"]
    err = capsys.readouterr().err
    for path, reason in listed.items():
        assert f"warning: skipped {src}/{path}: {reason}\n" in err

    raw = tmp_path / "raw"
    assert record["classes"] == ["COVID", "Normal"] and record["files"] == 7
    assert sorted(p.name for p in raw.rglob("*") if not p.is_dir()) == sorted(
        [
            "COVID-1.png",
            "COVID-2.png",
            "COVID-3.png",
            "inside.png",
            "Normal-1.png",
            "Normal-2.png",
            "Normal-3.png",
            "source.json",
        ]
    )
    assert all(p.is_file() and not p.is_symlink() for p in raw.rglob("*.png"))
    assert (raw / "COVID/images/inside.png").read_bytes() == (normal / "Normal-1.png").read_bytes()
    assert everything(src) == before


def test_files_are_opened_without_following_links_or_blocking_on_pipes(tmp_path):
    # What guards against a file swapped after it was checked: open_inside walks from the
    # source folder with O_NOFOLLOW, so a link anywhere on the path fails, and a pipe opens at once.
    from lungdx.source_checks import open_inside

    src = make_flat_dataset(tmp_path / "src", {"A": 1})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes(b"secret")
    (src / "linked").symlink_to(tmp_path / "elsewhere")
    (src / "A" / "link.png").symlink_to(src / "A" / "A-1.png")
    os.mkfifo(src / "A" / "pipe.png")
    root = os.open(src, os.O_RDONLY)
    try:
        os.close(open_inside(root, ("A", "A-1.png")))
        for parts in (("linked", "x.png"), ("A", "link.png")):
            with pytest.raises(OSError) as err:
                os.close(open_inside(root, parts))
            assert err.value.errno in (errno.ELOOP, errno.ENOTDIR)
        fd = open_inside(root, ("A", "pipe.png"))
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)  # so it is skipped, unread
        os.close(fd)
    finally:
        os.close(root)


def test_symlink_and_special_entries_in_a_zip_are_skipped_and_listed(tmp_path, capsys):
    archive = write_zip(
        tmp_path / "links.zip",
        small_classes()
        + [
            entry("COVID/images/passwd.png", b"/etc/passwd", mode=0o120777),
            entry("Normal/images/pipe.png", b"", mode=0o010644),
            entry("../../escaped.png", b"z"),
        ],
    )
    record = download(source_settings(archive), tmp_path / "raw")
    assert record["skipped"] == [
        {"path": "../../escaped.png", "reason": "unsafe name (absolute, with .. or a backslash), never extracted"},
        {"path": "COVID/images/passwd.png", "reason": "symbolic link, not extracted"},
        {"path": "Normal/images/pipe.png", "reason": "named pipe (FIFO), not a regular file"},
    ]
    err = capsys.readouterr().err
    assert f"warning: skipped {archive}/COVID/images/passwd.png: symbolic link, not extracted\n" in err
    assert record["files"] == 4 and not list((tmp_path / "raw").rglob("passwd.png"))
    assert not list(tmp_path.rglob("escaped.png"))


# --- 5. zip bombs and the free space --------------------------------------------------------


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def bomb(kind: str, tmp_path: Path) -> tuple[Path, ZipLimits, str]:
    """(a zip, the limits to download it with, the refusal expected)."""
    archive = tmp_path / f"{kind}.zip"
    if kind == "2.5 GiB entry":  # 2.6 MB on disk, a real bomb: it does inflate to 2.5 GiB
        write_zip(archive, small_classes() + [zeros_entry("COVID/images/bomb.png", 5 << 29)])
        return (
            archive,
            ZIP_LIMITS,
            (
                f"{archive}: entry 'COVID/images/bomb.png' declares 2,684,354,560 bytes "
                "(2.7 GB) once extracted, more than the 268,435,456 bytes (256 MiB) allowed "
                "per file (a chest X-ray image or mask is a few MB at most): refusing a "
                "possible zip bomb before extracting anything; check where the zip came from"
            ),
        )
    if kind == "1000-fold entry":
        write_zip(archive, small_classes() + [zeros_entry("Normal/images/flat.png", 20 << 20)])
        return archive, ZIP_LIMITS, (f"{archive}: entry 'Normal/images/flat.png' inflates 1,0")
    if kind == "overlapping entries":  # 40 entries of 2 MiB, all the same bytes of the zip
        first = entry("COVID/images/0.png", os.urandom(2 << 20))
        more = [{**first, "name": f"COVID/images/{i}.png", "same_as": first["name"]} for i in range(1, 40)]
        entries = small_classes() + [first] + more
        write_zip(archive, entries)
        declared = sum(len(e["data"]) for e in entries)
        return (
            archive,
            ZIP_LIMITS,
            (
                f"{archive}: its entries to extract declare {declared:,} bytes of compressed "
                f"data, more than the zip's own {archive.stat().st_size:,} bytes: entries "
                "overlap (a zip bomb technique)"
            ),
        )
    if kind == "many 1 MiB entries":  # each under the per-entry ratio check, together 1000-fold
        write_zip(archive, small_classes() + [zeros_entry(f"COVID/images/{i}.png", 1 << 20) for i in range(300)])
        return archive, ZIP_LIMITS, (f"{archive}: its entries to extract declare 314,57")
    if kind == "too many entries":
        write_zip(archive, small_classes(3))
        return archive, ZipLimits(max_entries=5), (f"{archive}: holds 6 entries, more than the 5 allowed")
    assert kind == "more than the free space"  # each entry within limits that allow 4 GB, together too many
    n = free_bytes(tmp_path) // 0xFFFF0000 + 2
    entries = small_classes() + [entry(f"COVID/images/big-{i}.png", b"x", size=0xFFFF0000) for i in range(n)]
    write_zip(archive, entries)
    return (
        archive,
        ZipLimits(max_entry_bytes=1 << 40, max_ratio=float("inf")),
        (f"no space left for the {n + 4:,} files to extract from {archive} at {tmp_path / 'raw'}: it needs about"),
    )


@pytest.mark.parametrize(
    "kind",
    [
        "2.5 GiB entry",
        "1000-fold entry",
        "many 1 MiB entries",
        "overlapping entries",
        "too many entries",
        "more than the free space",
    ],
)
def test_zip_bombs_are_refused_before_extracting(tmp_path, kind):
    archive, limits, message = bomb(kind, tmp_path)
    before = archive.read_bytes()
    with pytest.raises(LungdxError) as err, file_size_cap():
        download(source_settings(archive), tmp_path / "raw", zip_limits=limits)
    assert message in str(err.value), str(err.value)
    assert isinstance(err.value, DiskFull) == (kind == "more than the free space")
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name], "nothing extracted, nothing left"
    assert archive.read_bytes() == before


@pytest.mark.parametrize("crc_of", ["everything", "the declared bytes"])
def test_a_zip_entry_is_never_written_past_the_size_it_declares(tmp_path, crc_of):
    content = os.urandom(3 << 20)  # a lying header: it declares 1000 bytes
    crc = zlib.crc32(content if crc_of == "everything" else content[:1000])
    archive = write_zip(
        tmp_path / "liar.zip", small_classes() + [entry("COVID/images/liar.png", content, size=1000, crc=crc)]
    )
    if crc_of == "everything":  # the CRC check then fails: refused, nothing kept
        with pytest.raises(LungdxError, match=r"liar.zip: not a valid zip file \(Bad CRC-32"), file_size_cap():
            download(source_settings(archive), tmp_path / "raw")
        assert not (tmp_path / "raw").exists()
    else:
        with file_size_cap():
            download(source_settings(archive), tmp_path / "raw")
        assert (tmp_path / "raw/COVID/images/liar.png").read_bytes() == content[:1000]


def test_a_folder_source_larger_than_the_free_space_is_refused_before_copying(tmp_path):
    src = make_flat_dataset(tmp_path / "src", {"COVID": 2, "Normal": 2})
    with open(src / "COVID" / "huge.png", "wb") as f:
        f.truncate(free_bytes(tmp_path) + (1 << 30))  # sparse: takes no space
    # tree_hashes would read every byte of the sparse file: compare names, sizes and times instead.
    before = sorted(
        (p.relative_to(tmp_path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")
    )
    with (
        pytest.raises(
            DiskFull,
            match=rf"no space left for the 5 files of {src} at {tmp_path / 'raw'}: it needs "
            r"about .* is free there; free some space",
        ),
        file_size_cap(),
    ):
        download(source_settings(src), tmp_path / "raw")
    assert (
        sorted(
            (p.relative_to(tmp_path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")
        )
        == before
    )


def test_the_real_database_passes_the_zip_limits(tmp_path, capsys):
    kaggle, flat = shared("cxr-kaggle-layout"), shared("cxr-real")
    archive = tmp_path / "COVID-19_Radiography_Database.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:  # as Kaggle's zip: deflated PNGs
        for path in sorted(kaggle.rglob("*.png")):
            zf.write(path, "COVID-19_Radiography_Dataset/" + path.relative_to(kaggle).as_posix())
        for path in sorted(flat.rglob("*.png")):
            zf.write(path, f"COVID-19_Radiography_Dataset/{path.parent.name}/images/real-{path.name}")
        infos = [i for i in zf.infolist() if i.file_size]
    largest = max(i.file_size for i in infos)
    ratio = max(i.file_size / i.compress_size for i in infos)
    with capsys.disabled():
        print(f"\nreal samples: {len(infos)} entries, largest {largest:,} bytes, highest ratio {ratio:.2f}")
    assert largest * 100 < ZIP_LIMITS.max_entry_bytes and ratio * 10 < ZIP_LIMITS.max_ratio
    before = tree_hashes(kaggle), tree_hashes(flat)
    record = download(source_settings(archive), tmp_path / "raw")
    assert record["files"] == len(infos) == 508 and record["skipped"] == []
    assert record["classes"] == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert (tree_hashes(kaggle), tree_hashes(flat)) == before
