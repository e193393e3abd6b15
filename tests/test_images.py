"""Every supported image form becomes the same 8-bit grayscale array; bombs are refused undecoded."""

import struct
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from lungdx.images import (
    MAX_FILE_BYTES,
    UnreadableImage,
    decode_gray,
    image_dimensions,
    load_for_model,
    read_gray,
    resize_square,
)
from tests.helpers import png_bomb, write_image, xray


@pytest.fixture
def gray():
    img = xray(1, 80)
    img[:, :40] //= 2  # some structure so conversions are checked pixel by pixel
    return img


def test_gray_png_is_read_unchanged(tmp_path, gray):
    assert np.array_equal(read_gray(write_image(tmp_path / "g.png", gray)), gray)


def test_16bit_png_scales_to_the_same_8bit_pixels(tmp_path, gray):
    img16 = gray.astype(np.uint16) * 257  # the exact 16-bit export of an 8-bit image
    assert np.array_equal(read_gray(write_image(tmp_path / "g16.png", img16)), gray)


@pytest.mark.parametrize("channels", [3, 4])
def test_rgb_and_rgba_gray_images_give_the_gray_pixels(tmp_path, gray, channels):
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR if channels == 3 else cv2.COLOR_GRAY2BGRA)
    assert np.array_equal(read_gray(write_image(tmp_path / "c.png", img)), gray)


def test_jpeg_is_read_close_to_the_original(tmp_path):
    smooth = cv2.GaussianBlur(xray(2, 64), (0, 0), 3)
    out = read_gray(write_image(tmp_path / "j.jpg", smooth))
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"hello, not an image", "not a decodable image")])
def test_unreadable_files_name_the_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=reason):
        read_gray(path)


def test_truncated_png_is_unreadable(tmp_path, gray):
    path = write_image(tmp_path / "t.png", gray)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UnreadableImage):
        read_gray(path)


def test_tiny_image_is_refused(tmp_path):
    with pytest.raises(UnreadableImage, match="too small"):
        read_gray(write_image(tmp_path / "tiny.png", np.zeros((10, 10), np.uint8)))


def test_non_square_images_are_padded_centred_not_stretched():
    img = np.full((100, 50), 200, np.uint8)
    out = resize_square(img, 100)
    assert out.shape == (100, 100)
    assert (out[:, :25] == 0).all() and (out[:, 75:] == 0).all() and (out[:, 25:75] == 200).all()


def test_masks_stay_binary_after_resize():
    mask = np.zeros((299, 299), np.uint8)
    mask[50:200, 30:150] = 255
    out = resize_square(mask, 64, is_mask=True)
    assert set(np.unique(out)) == {0, 255}


def test_load_for_model_gives_the_model_size(tmp_path):
    big = write_image(tmp_path / "big.png", np.full((4000, 4000), 90, np.uint8))
    out = load_for_model(big, 64, "none")
    assert out.shape == (64, 64) and out.dtype == np.uint8 and (out == 90).all()


# --- decompression bombs: sizes from the header, limits before decoding ---


def encoded(ext: str, img: np.ndarray, *flags) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(flags))
    assert ok, ext
    return buf.tobytes()


def bmp_core_header(img: np.ndarray) -> bytes:
    """A 24-bit BMP with the old 12-byte BITMAPCOREHEADER (OS/2 1.x), which cv2 does not write."""
    h, w = img.shape[:2]
    stride = (3 * w + 3) // 4 * 4
    rows = b"".join(np.ascontiguousarray(row).tobytes().ljust(stride, b"\0") for row in img[::-1])  # bottom-up
    return b"BM" + struct.pack("<IHHI", 26 + len(rows), 0, 0, 26) + struct.pack("<IHHHH", 12, w, h, 1, 24) + rows


def bmp_top_down(img: np.ndarray) -> bytes:
    """A BITMAPINFOHEADER BMP stored top-down: the height in the header is negative."""
    data = bytearray(encoded(".bmp", img))
    h = struct.unpack_from("<i", data, 22)[0]
    struct.pack_into("<i", data, 22, -h)
    return bytes(data)


def tiff_big_endian(img: np.ndarray) -> bytes:
    """An uncompressed 8-bit gray TIFF in Motorola byte order, width a SHORT and height a LONG."""
    h, w = img.shape
    entries = [
        (256, 3, w),
        (257, 4, h),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 12 * 8 + 4),
        (278, 4, h),
        (279, 4, w * h),
    ]
    ifd = (
        struct.pack(">H", len(entries))
        + b"".join(
            struct.pack(">HHI", tag, kind, 1)
            + (struct.pack(">HH", value, 0) if kind == 3 else struct.pack(">I", value))
            for tag, kind, value in entries
        )
        + struct.pack(">I", 0)
    )
    return b"MM\x00*" + struct.pack(">I", 8) + ifd + img.tobytes()


def jpeg_with_metadata(img: np.ndarray) -> bytes:
    """A JPEG with an APP1 and a COM segment and fill bytes before its frame header, as cameras write."""
    data = encoded(".jpg", img)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 1000) + b"Exif\0\0" + bytes(994)
    comment = b"\xff\xff\xff\xfe" + struct.pack(">H", 2 + 5) + b"hello"
    return data[:2] + app1 + comment + data[2:]


GRAY = xray(5, 80)[:53, :37]  # not square, so width and height cannot be confused
FORMS = {
    "png 8-bit": lambda: encoded(".png", GRAY),
    "png 16-bit": lambda: encoded(".png", GRAY.astype(np.uint16) * 257),
    "png rgba": lambda: encoded(".png", cv2.cvtColor(GRAY, cv2.COLOR_GRAY2BGRA)),
    "jpeg": lambda: encoded(".jpg", GRAY),
    "jpeg progressive": lambda: encoded(".jpg", GRAY, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "jpeg with metadata": lambda: jpeg_with_metadata(GRAY),
    "bmp": lambda: encoded(".bmp", GRAY),
    "bmp core header": lambda: bmp_core_header(cv2.cvtColor(GRAY, cv2.COLOR_GRAY2BGR)),
    "bmp top-down": lambda: bmp_top_down(cv2.cvtColor(GRAY, cv2.COLOR_GRAY2BGR)),
    "tiff little-endian": lambda: encoded(".tif", GRAY),
    "tiff big-endian": lambda: tiff_big_endian(GRAY),
}


@pytest.mark.parametrize("form", FORMS)
def test_header_dimensions_equal_the_decoded_shape(form):
    data = FORMS[form]()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None, form
    assert image_dimensions(data) == (37, 53) == (decoded.shape[1], decoded.shape[0])
    assert decode_gray(data).shape == (53, 37)


PNG = encoded(".png", GRAY)
JPEG = encoded(".jpg", GRAY)
BAD_HEADERS = {
    "gif": (b"GIF89a" + bytes(100), "not a decodable image (not a PNG, JPEG, BMP or TIFF file)"),
    "png cut in its header": (PNG[:20], "not a decodable image (truncated PNG header)"),
    "png without IHDR first": (PNG[:12] + b"tEXt" + PNG[16:], "malformed PNG header: the first chunk is not IHDR"),
    "png of width 0": (PNG[:16] + bytes(4) + PNG[20:], "malformed PNG header: it gives a 0x53 image"),
    "jpeg cut before its frame header": (JPEG[: JPEG.index(b"\xff\xc0")], "truncated JPEG header"),
    "jpeg with data before any frame header": (
        b"\xff\xd8\xff\xda\x00\x08" + bytes(50),
        "no frame header (SOFn) before the image data",
    ),
    "bmp cut in its header": (b"BM" + bytes(14), "truncated BMP header"),
    "bmp with an unknown header": (
        b"BM" + bytes(12) + struct.pack("<I", 20) + bytes(40),
        "malformed BMP header: unknown info header size 20",
    ),
    "tiff whose first IFD is past the end": (b"II*\x00" + struct.pack("<I", 10**6), "truncated TIFF header"),
    "tiff without a width": (
        b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 257, 3, 1, 53) + bytes(4),
        "no ImageWidth and ImageLength in the first IFD",
    ),
    # libtiff takes the first of two ImageWidth tags; a reader of the last one would be fooled.
    "tiff with a size tag twice": (
        b"II*\x00"
        + struct.pack("<IH", 8, 4)
        + b"".join(
            struct.pack("<HHII", tag, 4, 1, value)
            for tag, value in ((256, 30000), (256, 100), (257, 30000), (257, 100))
        )
        + bytes(4),
        "malformed TIFF header: tag 256 (ImageWidth) twice",
    ),
    "bigtiff": (
        b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + bytes(64),
        "BigTIFF is not supported; save the image as PNG or as a classic TIFF",
    ),
}


@pytest.mark.parametrize("case", BAD_HEADERS)
def test_unknown_formats_and_bad_headers_are_unreadable_with_the_reason(tmp_path, case):
    content, reason = BAD_HEADERS[case]
    path = tmp_path / "bad.img"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage) as caught:
        read_gray(path)
    assert reason in str(caught.value)


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_the_png_bomb_helper_writes_a_real_png(tmp_path, bit_depth, dtype):
    path = png_bomb(tmp_path / "small.png", side=300, bit_depth=bit_depth)  # several 64-row chunks, repeated
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape == (300, 300) and img.dtype == dtype and not img.any()
    assert image_dimensions(path.read_bytes()) == (300, 300)


BOMB = (
    "too large to decode safely: 30000x30000 is 900,000,000 pixels, over the limit of 36,000,000 "
    "(lungdx.images.MAX_PIXELS, a longest side of 6000); downscale it first"
)


@pytest.mark.parametrize(
    "width, height, bit_depth, message",
    [
        (30000, None, 8, BOMB),
        (30000, None, 16, BOMB),
        # A strip within 36 megapixels that resize_square would pad to a 60000x60000 square (3.6 GB).
        (
            60000,
            600,
            8,
            "too large to decode safely: 60000x600 (padded to a 60000x60000 square) is "
            "3,600,000,000 pixels, over the limit of 36,000,000",
        ),
    ],
)
def test_image_bombs_are_refused_from_the_header_before_decoding(tmp_path, width, height, bit_depth, message):
    path = png_bomb(tmp_path / "bomb.png", side=width, bit_depth=bit_depth, height=height)
    assert path.stat().st_size < 2 << 20  # decoded: 900 MB (8-bit) or 1.8 GB (16-bit)
    for refuse in (
        lambda: read_gray(path),
        lambda: decode_gray(path.read_bytes()),
        lambda: load_for_model(path, 128, "none"),
    ):
        tracemalloc.start()  # counts numpy and OpenCV output arrays: a decode would show 900 MB or more
        start = time.perf_counter()
        try:
            with pytest.raises(UnreadableImage) as caught:
                refuse()
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert str(caught.value).startswith(message)
        assert peak < 8 << 20, f"{peak} bytes allocated: the bomb was decoded"
        assert seconds < 3.0  # decoding it takes 7-10 s here


def test_the_pixel_limit_is_exact(tmp_path):
    at_limit = png_bomb(tmp_path / "6000.png", side=6000)  # 36 megapixels: allowed
    assert read_gray(at_limit).shape == (6000, 6000)
    with pytest.raises(UnreadableImage, match=r"6001x6001 is 36,012,001 pixels, over the limit of 36,000,000"):
        read_gray(png_bomb(tmp_path / "6001.png", side=6001))
    with pytest.raises(UnreadableImage, match=r"6001x16 \(padded to a 6001x6001 square\)"):
        read_gray(png_bomb(tmp_path / "strip.png", side=6001, height=16))


def test_a_file_over_the_size_limit_is_refused_without_being_read(tmp_path):
    path = write_image(tmp_path / "huge.png", xray(3))
    with open(path, "r+b") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used, but reading it would take 256 MiB
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableImage) as caught:
            read_gray(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (
        "file too large to read safely: 256.0 MiB (268435457 bytes), over the limit of "
        "256 MiB (lungdx.images.MAX_FILE_BYTES); downscale or recompress it first"
    )
    assert peak < 1 << 20, f"{peak} bytes allocated: the file was read"


# --- lung focus (prepare.lung_mask crop | mask) -----------------------------------------


def _box_mask(shape, top, bottom, left, right):
    mask = np.zeros(shape, np.uint8)
    mask[top:bottom, left:right] = 255
    return mask


def test_lung_box_is_the_masks_box_widened_by_the_margin_and_clipped():
    from lungdx.images import CROP_MARGIN, lung_box

    mask = _box_mask((200, 300), 50, 150, 100, 200)  # a 100x100 box
    m = round(CROP_MARGIN * 100)
    assert lung_box(mask) == (50 - m, 150 + m, 100 - m, 200 + m)
    assert lung_box(_box_mask((200, 300), 0, 150, 250, 300)) == (0, 165, 245, 300)  # clipped at the edges
    two_lungs = _box_mask((200, 300), 40, 160, 30, 120) | _box_mask((200, 300), 60, 170, 180, 270)
    assert lung_box(two_lungs, margin=0) == (40, 170, 30, 270)  # one box around both lungs


def test_crop_keeps_exactly_the_box_and_mask_blacks_only_beyond_the_dilated_lungs():
    from lungdx.images import MASK_DILATION, focus_on_lungs, lung_box

    img = np.random.default_rng(0).integers(1, 256, (200, 300), dtype=np.uint8)  # no black pixel of its own
    mask = _box_mask((200, 300), 50, 150, 100, 200)
    top, bottom, left, right = lung_box(mask)
    cropped, box = focus_on_lungs(img, mask, "crop")
    assert box == (top, bottom, left, right) and np.array_equal(cropped, img[top:bottom, left:right])

    masked, box = focus_on_lungs(img, mask, "mask")
    assert box == (top, bottom, left, right) and masked.shape == cropped.shape
    radius = round(MASK_DILATION * 300)  # 6 px
    local = lambda r, c: masked[r - top, c - left]  # noqa: E731 -- the crop's pixel of an image pixel
    assert np.array_equal(masked[50 - top : 150 - top, 100 - left : 200 - left], img[50:150, 100:200])  # lungs kept
    assert local(100, 100 - radius) == img[100, 100 - radius]  # within the dilation: kept
    assert local(100, 100 - radius - 1) == 0  # just beyond it: black
    assert local(50 - radius - 1, 150) == 0 and local(150 + radius, 150) == 0


def test_masks_of_another_size_are_brought_to_the_images_and_empty_masks_are_refused(tmp_path):
    from lungdx.images import load_for_model, native_mask

    img = np.random.default_rng(1).integers(1, 256, (299, 299), dtype=np.uint8)
    small = _box_mask((256, 256), 64, 192, 32, 128)  # Kaggle: 256x256 masks for 299x299 images
    write_image(tmp_path / "x.png", img)
    write_image(tmp_path / "m.png", small)
    native = native_mask(tmp_path / "m.png", (299, 299))
    assert native.shape == (299, 299) and set(np.unique(native)) == {0, 255}
    rows = np.flatnonzero(native.any(axis=1))
    assert abs(rows[0] - 64 * 299 / 256) <= 1 and abs(rows[-1] + 1 - 192 * 299 / 256) <= 1
    out = load_for_model(tmp_path / "x.png", 64, "crop", tmp_path / "m.png")
    assert out.shape == (64, 64) and not np.array_equal(out, load_for_model(tmp_path / "x.png", 64, "none"))

    write_image(tmp_path / "empty.png", np.zeros((256, 256), np.uint8))
    with pytest.raises(UnreadableImage, match=r"lung mask .*empty.png: empty"):
        load_for_model(tmp_path / "x.png", 64, "mask", tmp_path / "empty.png")
    with pytest.raises(UnreadableImage, match=r"lung mask .*missing.png: cannot read"):
        load_for_model(tmp_path / "x.png", 64, "crop", tmp_path / "missing.png")
