"""The download stage: every source form into one raw layout, sources never touched."""

import dataclasses
import json
import re
import threading
import time
import zipfile
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest

from lungdx.download import download
from lungdx.errors import LungdxError, ParamError
from lungdx.sources import plan_layout, resolve_source
from tests.helpers import (
    make_flat_dataset,
    make_kaggle_dataset,
    settings,
    shared,
    tree_hashes,
    write_image,
    xray,
    zip_folder,
)

FOUR = {"COVID": 3, "Lung_Opacity": 2, "Normal": 3, "Viral Pneumonia": 2}


def source_settings(source, **changes):
    """The download stage's settings for `source`: params.yaml's, with a small synthetic set and
    the Kaggle dataset owner/data, version 1."""
    return settings(
        {
            "seed": 1,
            "dataset.source": str(source),
            "dataset.kaggle_handle": "owner/data",
            "dataset.kaggle_version": 1,
            "dataset.synthetic.per_class": 2,
            "dataset.synthetic.image_size": 64,
            **changes,
        }
    ).download


def raw_listing(raw: Path) -> dict[str, list[str]]:
    return {
        p.relative_to(raw).as_posix(): sorted(f.name for f in p.iterdir())
        for p in sorted(raw.glob("*/*"))
        if p.is_dir()
    }


def test_plan_layout_finds_kaggle_classes_under_a_top_folder_and_ignores_metadata():
    files = [
        "Top/README.md.txt",
        "Top/COVID.metadata.xlsx",
        "Top/COVID/images/COVID-1.png",
        "Top/COVID/masks/COVID-1.png",
        "Top/Viral Pneumonia/images/Viral Pneumonia-1.png",
        "__MACOSX/Top/._COVID-1.png",
        "Top/.DS_Store",
    ]
    assert plan_layout(files) == {
        "Top/COVID/images/COVID-1.png": "COVID/images/COVID-1.png",
        "Top/COVID/masks/COVID-1.png": "COVID/masks/COVID-1.png",
        "Top/Viral Pneumonia/images/Viral Pneumonia-1.png": "Viral Pneumonia/images/Viral Pneumonia-1.png",
        "<dir>COVID": "COVID/images/",
        "<dir>Viral Pneumonia": "Viral Pneumonia/images/",
    }


def test_plan_layout_flat_layout():
    plan = plan_layout(["COVID/COVID-1.png", "Normal/Normal-1.png", "Normal/notes.txt"])
    assert plan["COVID/COVID-1.png"] == "COVID/images/COVID-1.png"
    assert plan["Normal/notes.txt"] == "Normal/images/notes.txt"  # kept, so sample reports it by name


def test_plan_layout_without_class_folders_is_a_clear_error():
    with pytest.raises(LungdxError, match="no class folders found"):
        plan_layout(["a.png", "b.txt"])


@pytest.mark.parametrize("layout", ["flat", "kaggle", "kaggle-top"])
@pytest.mark.parametrize("as_zip", [False, True])
def test_download_local_folder_and_zip_in_both_layouts(tmp_path, layout, as_zip):
    src = tmp_path / "src"
    if layout == "flat":
        make_flat_dataset(src, FOUR)
    else:
        make_kaggle_dataset(src, FOUR, top="COVID-19_Radiography_Dataset" if layout == "kaggle-top" else None)
    source = zip_folder(src, tmp_path / "src.zip") if as_zip else src
    before = tree_hashes(src) if not as_zip else {"zip": source.read_bytes()}
    record = download(source_settings(source), tmp_path / "raw")
    raw = tmp_path / "raw"
    assert record["kind"] == ("zip" if as_zip else "folder")
    assert record["classes"] == sorted(FOUR)
    listing = raw_listing(raw)
    for cls, n in FOUR.items():
        assert listing[f"{cls}/images"] == sorted(f"{cls}-{i + 1}.png" for i in range(n))
        assert (f"{cls}/masks" in listing) == (layout != "flat")
    assert json.loads((raw / "source.json").read_text())["files"] == record["files"]
    assert (tree_hashes(src) if not as_zip else {"zip": source.read_bytes()}) == before, "source changed"


def test_download_replaces_previous_output_atomically(tmp_path):
    src = make_flat_dataset(tmp_path / "a", {"A": 2, "B": 2})
    download(source_settings(src), tmp_path / "raw")
    src2 = make_flat_dataset(tmp_path / "b", {"C": 2, "D": 2})
    download(source_settings(src2), tmp_path / "raw")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["C", "D", "source.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")], "no temporary folder left"


def test_download_synthetic_writes_images_masks_and_lesions(tmp_path):
    record = download(source_settings("synthetic"), tmp_path / "raw")
    assert record["classes"] == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert raw_listing(tmp_path / "raw")["Viral Pneumonia/lesions"] == [
        "Viral Pneumonia-1.png",
        "Viral Pneumonia-2.png",
    ]


def test_download_real_flat_samples(tmp_path):
    src = shared("cxr-real")
    before = tree_hashes(src)
    record = download(source_settings(src), tmp_path / "raw")
    assert record["classes"] == ["COVID", "Normal"]
    listing = raw_listing(tmp_path / "raw")
    assert len(listing["COVID/images"]) == len(list((src / "COVID").glob("*.png"))) == 250
    assert tree_hashes(src) == before


@pytest.mark.parametrize("as_zip", [False, True])
def test_download_real_kaggle_layout_with_masks_and_a_space(tmp_path, as_zip):
    src = shared("cxr-kaggle-layout")
    source = zip_folder(src, tmp_path / "k.zip") if as_zip else src
    before = tree_hashes(src)
    record = download(source_settings(source), tmp_path / "raw")
    assert record["classes"] == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    listing = raw_listing(tmp_path / "raw")
    assert listing["Viral Pneumonia/images"] == listing["Viral Pneumonia/masks"] == ["Viral Pneumonia-1.png"]
    assert tree_hashes(src) == before


def test_zip_slip_entries_are_never_written_outside(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("COVID/COVID-1.png", b"x")
        zf.writestr("Normal/Normal-1.png", b"y")
        zf.writestr("../../escaped.png", b"z")
        zf.writestr("/abs/escaped.png", b"z")
    out = tmp_path / "deep" / "raw"
    download(source_settings(archive), out)
    assert not list(tmp_path.rglob("escaped.png"))
    assert sorted(p.name for p in out.iterdir()) == ["COVID", "Normal", "source.json"]


def test_entry_names_with_dot_slash_or_double_slash_are_found_and_backslash_names_skipped(tmp_path, capsys):
    img = cv2.imencode(".png", xray(1))[1].tobytes()
    archive = tmp_path / "odd.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("./top/COVID/images/a.png", img)  # some zip tools write ./ in front
        zf.writestr("top//Normal/images/b.png", img)  # or a double slash
        zf.writestr("top/Normal/images/c\\d.png", img)  # a Windows separator, or a trick
    record = download(source_settings(archive), tmp_path / "raw")
    assert (tmp_path / "raw" / "COVID" / "images" / "a.png").read_bytes() == img
    assert (tmp_path / "raw" / "Normal" / "images" / "b.png").read_bytes() == img
    assert record["skipped"] == [
        {
            "path": "top/Normal/images/c\\d.png",
            "reason": "unsafe name (absolute, with .. or a backslash), never extracted",
        }
    ]
    folder = tmp_path / "folder"
    for name in ("COVID/x.png", "Normal/y.png", "Normal/z\\w.png"):  # legal on Linux
        write_image(folder / name, xray(len(name)))
    record = download(source_settings(folder), tmp_path / "raw2")
    assert record["files"] == 2 and record["skipped"] == [
        {"path": "Normal/z\\w.png", "reason": "unsafe name (with a backslash), not copied"}
    ]
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"this is not a zip", None])
def test_not_a_zip_or_truncated_zip_is_a_clear_error(tmp_path, content):
    archive = tmp_path / "data.zip"
    if content is None:  # a download cut short
        zip_folder(make_flat_dataset(tmp_path / "src", {"A": 3, "B": 3}), archive)
        archive.write_bytes(archive.read_bytes()[:-100])
    else:
        archive.write_bytes(content)
    with pytest.raises(LungdxError, match="data.zip: not a valid zip file"):
        download(source_settings(archive), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_zip_without_class_folders_is_a_clear_error(tmp_path):
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", b"x")
    with pytest.raises(LungdxError, match="flat.zip: no class folders found"):
        download(source_settings(archive), tmp_path / "raw")


@pytest.mark.parametrize("value", ["no/such/folder", "ftp://example.org/x.zip", "", 3])
def test_unknown_source_forms_fail_naming_the_key(tmp_path, value):
    # params.yaml's check lets an unknown form through only when it is a non-empty string (whether
    # a path exists is download's check); resolve_source refuses every unknown form itself too.
    unchecked = dataclasses.replace(source_settings("synthetic"), source=value)
    with pytest.raises(LungdxError, match=re.escape(f"params.yaml: dataset.source = {value!r} is not allowed: ")):
        download(unchecked, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    with pytest.raises(LungdxError, match=re.escape(f"the source = {value!r} is not allowed: ")):
        resolve_source(value, "owner/data")
    if not isinstance(value, str) or not value.strip():  # refused by params.yaml's check already
        with pytest.raises(ParamError, match=re.escape(f"params.yaml: dataset.source = {value!r} is not allowed")):
            settings({"dataset.source": value})


class RefusingProxy(BaseHTTPRequestHandler):
    """An HTTPS proxy that refuses every connection with 403."""

    def do_CONNECT(self):
        self.send_error(403, "Forbidden")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("network", ["offline", "refused", "broken credentials"])
def test_kaggle_offline_or_refused_gives_the_two_ways_out(tmp_path, monkeypatch, network):
    # Offline: no network here, kagglehub's own request fails. Refused: a proxy answers 403. Broken
    # credentials: a kaggle.json that is not JSON (kagglehub raises ValueError before any request).
    # Each failure must become one clear message.
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    if network == "broken credentials":
        (tmp_path / "kaggle").mkdir()
        (tmp_path / "kaggle" / "kaggle.json").write_text('{"username": "x"')
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
        for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
            monkeypatch.delenv(var, raising=False)
    if network == "refused":
        server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingProxy)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        for var in ("HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{server.server_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(LungdxError) as err:
        download(source_settings("kaggle"), tmp_path / "raw")
    msg = str(err.value)
    assert "owner/data/versions/1" in msg and "KAGGLE_API_TOKEN" in msg and "dataset.source" in msg
    if network == "refused":
        assert "ProxyError" in msg or "403" in msg, msg
        server.shutdown()
    assert not (tmp_path / "raw").exists()


@pytest.fixture
def http_folder(tmp_path):
    """A loopback HTTP server over tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_download_from_url_streams_a_zip(tmp_path, http_folder):
    www, base = http_folder
    zip_folder(make_flat_dataset(tmp_path / "src", {"A": 2, "B": 3}), www / "data.zip")
    record = download(source_settings(f"{base}/data.zip"), tmp_path / "raw")
    assert record["kind"] == "url" and record["files"] == 5
    assert not list((tmp_path / "raw").glob("*.zip")), "the downloaded archive is not kept"


def test_url_returning_html_is_a_clear_error(tmp_path, http_folder):
    www, base = http_folder
    (www / "index.html").write_text("<html>sign in</html>")
    with pytest.raises(LungdxError, match="did not return a zip file"):
        download(source_settings(f"{base}/index.html"), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


class StallingHandler(BaseHTTPRequestHandler):
    """Answers `/silent` with nothing at all, `/stall` with the start of a zip and then nothing."""

    def do_GET(self):
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04" + b"\0" * 100)
            self.wfile.flush()
        time.sleep(4)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("path", ["silent", "stall"])
def test_url_that_times_out_is_a_clear_error(tmp_path, path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StallingHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(LungdxError, match=r"timed out \(nothing received for 1 s\).*set dataset.source"):
            download(source_settings(f"http://127.0.0.1:{server.server_port}/{path}"), tmp_path / "raw", url_timeout=1)
    finally:
        server.shutdown()
    assert not (tmp_path / "raw").exists() and not list(tmp_path.glob(".raw*")), "no partial download is left"


def test_corrupt_data_inside_a_zip_member_is_one_line_and_leaves_nothing(tmp_path):
    src = make_flat_dataset(tmp_path / "src", {"A": 2, "B": 2})
    archive = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*.png")):
            zf.write(path, path.relative_to(src).as_posix())
    first = zipfile.ZipFile(archive).infolist()[0]
    data = bytearray(archive.read_bytes())
    start = first.header_offset + 30 + len(first.filename.encode())  # the member's deflated bytes
    data[start + 2 : start + 40] = b"\xff" * 38
    archive.write_bytes(bytes(data))
    with pytest.raises(LungdxError, match=r"damaged.zip: not a valid zip file \(Error -3 while decompressing"):
        download(source_settings(archive), tmp_path / "raw", project_root=tmp_path)
    assert not (tmp_path / "raw").exists()
