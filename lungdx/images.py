"""Reading any X-ray image file the same way everywhere (sample, prepare, predict).

Policy, documented in docs/data.md:
- any PNG/JPEG/BMP/TIFF that OpenCV decodes: 8 or 16 bit, gray, RGB or RGBA;
- decompression bombs are refused before any pixel is decoded: a file over
  MAX_FILE_BYTES is refused from its size (stat) before it is read, and an image
  whose padded square (below) would exceed MAX_PIXELS from the width and height in its header (PNG IHDR, JPEG SOFn
  frame header, BMP info header, first IFD of a classic TIFF; BigTIFF is not
  supported). A 30000x30000 black PNG is under 1 MB on disk and 900 MB decoded;
  anything whose header cannot be read is refused too, so nothing reaches the
  decoder unchecked;
- 16-bit is scaled to 8-bit by its full range (value * 255 / 65535), so a
  16-bit export of an 8-bit image gives the same pixels back;
- colour is converted to luminance; an alpha channel is dropped (X-rays carry
  no transparency; exporters add it as fully opaque);
- non-square images are padded to a square with black, centred, so the whole
  thorax survives and the anatomy is not stretched; then resized with
  INTER_AREA when shrinking (no aliasing) and INTER_LINEAR when enlarging.
  Masks use the same padding and INTER_NEAREST, so they stay binary.

Lung focus (`prepare.lung_mask`, docs/data.md), applied before the padding when asked:
- the lung mask is first brought to the image's own size (Kaggle's masks are 256x256 for
  299x299 images) with INTER_NEAREST;
- `crop` cuts the image to the lungs' bounding box, widened by CROP_MARGIN of the box's
  height and width on every side (clipped to the image), so the lung borders and costophrenic
  angles stay in view;
- `mask` first sets every pixel farther than MASK_DILATION of the image's longer side from
  the lungs to black (the mask dilated by an ellipse, so a slightly small hand-drawn mask does
  not cut off the pleura), then crops as `crop` does.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from pathlib import Path

import numpy as np

from .errors import LungdxError
from .opencv import cv2

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# What load_for_model does, recorded in every saved model (lungdx.model_file): a model is only
# ever fed images prepared the way its training images were. Change the name if the steps change.
PREPROCESSING = "gray8-pad-square-v1"
PREPROCESSING_STEPS = (
    "decode to 8-bit gray (16-bit scaled by 255/65535, colour to luminance, alpha dropped); "
    "pad to a square with black, centred; resize to the input size (INTER_AREA when "
    "shrinking, INTER_LINEAR when enlarging); pixel values 0..255 as float32, unscaled: "
    "the model's first layer scales them"
)
MIN_SIDE = 16
# Decompression-bomb limits, checked before decoding. Real chest X-rays are at most about
# 4300x3500 (15 megapixels: full-resolution DICOM exports); the Kaggle database's are 299x299.
# The limit applies to the square an image is padded to (its longest side squared, at most
# 6000x6000): 36 megapixels decode to at most 288 MB (16-bit RGBA), a 30000x30000 PNG to 900 MB-7.2 GB.
MAX_PIXELS = 6000 * 6000
# A 4300x3500 16-bit RGBA image stored uncompressed is 120 MB; no real X-ray file comes near this.
MAX_FILE_BYTES = 256 << 20
# Lung focus (prepare.lung_mask; see the module docstring). Changing either reruns prepare.
CROP_MARGIN = 0.10  # of the lungs' box height (above, below) and width (left, right)
MASK_DILATION = 0.02  # of the image's longer side: how far outside the mask `mask` keeps pixels
MIN_LUNG_SHARE = 0.01  # of the image: a lung mask covering less is not one (real ones: 17-59%)
MAX_LUNG_SHARE = 0.90  # ... nor one covering more (all white, or lungs black on white)
MASK_ASPECT_TOLERANCE = 0.05  # |log| of mask to image aspect ratio: 5%, for rounding in exported masks
# A mask is black and white: pixels between GREY_LOW and GREY_HIGH are grey. Anti-aliased outlines
# of a real mask are a few percent of it (its edge); a photo or an X-ray given as a mask is mostly grey.
GREY_LOW, GREY_HIGH, MAX_GREY_SHARE = 32, 223, 0.10
WHOLE = "whole"  # prepare_image's lungs=WHOLE: no lungs found, the image is used whole


class UnreadableImage(Exception):
    """A file that is not a decodable image; carries the reason."""


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a regular image file, at most MAX_FILE_BYTES: a larger one is refused from
    its size, unread; a pipe, device or socket is refused without reading it (a FIFO would block
    and /dev/zero never ends), and the file is read no further than the size it had when opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO does not wait
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UnreadableImage("not a regular file (a folder, pipe, device or socket)")
            if st.st_size > MAX_FILE_BYTES:
                raise UnreadableImage(
                    f"file too large to read safely: {st.st_size / 2**20:.1f} MiB ({st.st_size} "
                    f"bytes), over the limit of {MAX_FILE_BYTES / 2**20:g} MiB "
                    "(lungdx.images.MAX_FILE_BYTES); downscale or recompress it first"
                )
            return f.read(st.st_size)
    except IsADirectoryError as exc:
        raise UnreadableImage("not a regular file (a folder, pipe, device or socket)") from exc
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror}") from exc


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Decode `path` to a 2-D uint8 array, or raise UnreadableImage with a reason."""
    return decode_gray(read_bytes(path))


def decode_gray(data: bytes | bytearray | np.ndarray) -> np.ndarray:
    """Decode encoded image bytes to a 2-D uint8 array, or raise UnreadableImage.

    The header's width and height are checked against MAX_PIXELS first: a bomb is never decoded.
    """
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if data.size == 0:
        raise UnreadableImage("empty file (0 bytes)")
    width, height = image_dimensions(data)
    side = max(width, height)  # what resize_square pads it to: a 60000x600 strip becomes 60000x60000
    if side * side > MAX_PIXELS:
        padded = f" (padded to a {side}x{side} square)" if width != height else ""
        raise UnreadableImage(
            f"too large to decode safely: {width}x{height}{padded} is {side * side:,} pixels, "
            f"over the limit of {MAX_PIXELS:,} (lungdx.images.MAX_PIXELS, a longest side of "
            f"{math.isqrt(MAX_PIXELS)}); downscale it first"
        )
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. a header OpenCV's own checks refuse
        raise UnreadableImage(f"not a decodable image ({str(exc).strip().splitlines()[-1]})") from exc
    if img is None:
        raise UnreadableImage("not a decodable image (truncated, corrupt or not an image)")
    return to_gray_uint8(img)


def image_dimensions(data: bytes | bytearray | np.ndarray) -> tuple[int, int]:
    """(width, height) of encoded image bytes, read from the header alone, without decoding.

    PNG, JPEG, BMP and classic TIFF; anything else, or a header that is truncated or
    malformed, raises UnreadableImage.
    """
    # numpy declares an array's buffer (its __buffer__) to type checkers from Python 3.12 on only
    view = memoryview(data)  # type: ignore[arg-type]
    for magic, kind, reader in _HEADER_READERS:
        if bytes(view[: len(magic)]) == magic:
            width, height = reader(view)
            if width <= 0 or height <= 0:
                raise _malformed(kind, f"it gives a {width}x{height} image")
            return width, height
    raise UnreadableImage("not a decodable image (not a PNG, JPEG, BMP or TIFF file)")


def _malformed(kind: str, what: str) -> UnreadableImage:
    return UnreadableImage(f"not a decodable image (malformed {kind} header: {what})")


def _unpack(kind: str, fmt: str, data, offset: int) -> tuple:
    """struct.unpack_from, a header that ends too early being UnreadableImage."""
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error as exc:
        raise UnreadableImage(f"not a decodable image (truncated {kind} header)") from exc


def _png_size(data) -> tuple[int, int]:
    # The 8-byte signature, then the IHDR chunk, which must come first: length, b"IHDR", width, height.
    _, chunk, width, height = _unpack("PNG", ">I4sII", data, 8)
    if chunk != b"IHDR":
        raise _malformed("PNG", "the first chunk is not IHDR")
    return width, height


# Frame headers (start of frame, SOFn) carry the size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data) -> tuple[int, int]:
    # After SOI (FF D8): segments FF <code> <length: 2 bytes, counting itself> <payload>, up to a SOFn,
    # whose payload is length, precision, height, width.
    pos = 2
    while True:
        marker, code = _unpack("JPEG", "BB", data, pos)
        if marker != 0xFF:
            raise _malformed("JPEG", f"no marker at byte {pos}")
        if code == 0xFF:  # a fill byte before the marker's code
            pos += 1
            continue
        pos += 2
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # TEM, RSTn: markers without a length
            continue
        if code in (0xD8, 0xD9, 0xDA):  # SOI, EOI, or the image data (SOS) before any frame header
            raise _malformed("JPEG", "no frame header (SOFn) before the image data")
        if code in _JPEG_SOF:
            _, _, height, width = _unpack("JPEG", ">HBHH", data, pos)
            return width, height
        (length,) = _unpack("JPEG", ">H", data, pos)
        if length < 2:
            raise _malformed("JPEG", f"segment length {length} at byte {pos}")
        pos += length  # APPn, COM, DQT, DHT, ...: skipped


def _bmp_size(data) -> tuple[int, int]:
    # "BM", file size, reserved, pixel offset (14 bytes), then the DIB header, starting with its own size.
    (header_size,) = _unpack("BMP", "<I", data, 14)
    if header_size == 12:  # BITMAPCOREHEADER (OS/2 1.x): unsigned 16-bit width and height
        return _unpack("BMP", "<HH", data, 18)
    if header_size >= 40:  # BITMAPINFOHEADER and its successors: signed 32-bit; height < 0: top-down rows
        width, height = _unpack("BMP", "<ii", data, 18)
        return width, abs(height)
    raise _malformed("BMP", f"unknown info header size {header_size}")


def _tiff_size(data) -> tuple[int, int]:
    # Byte order ("II" little-endian, "MM" big), 42, offset of the first IFD: a count, then 12-byte
    # entries (tag, type, count, value); ImageWidth is tag 256, ImageLength 257, SHORT (3) or LONG (4).
    order = "<" if bytes(data[:2]) == b"II" else ">"
    version, ifd = _unpack("TIFF", order + "HI", data, 2)
    if version == 43:
        raise UnreadableImage("BigTIFF is not supported; save the image as PNG or as a classic TIFF")
    (count,) = _unpack("TIFF", order + "H", data, ifd)
    found = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, field_type = _unpack("TIFF", order + "HH", data, entry)
        if tag in (256, 257):
            if tag in found:  # libtiff takes the first, a reader of the last would be fooled: refuse
                raise _malformed("TIFF", f"tag {tag} ({'ImageWidth' if tag == 256 else 'ImageLength'}) twice")
            if field_type not in (3, 4):
                raise _malformed("TIFF", f"tag {tag} has type {field_type}, not SHORT or LONG")
            (found[tag],) = _unpack("TIFF", order + ("H" if field_type == 3 else "I"), data, entry + 8)
    if 256 not in found or 257 not in found:
        raise _malformed("TIFF", "no ImageWidth and ImageLength in the first IFD")
    return found[256], found[257]


_HEADER_READERS = (
    (b"\x89PNG\r\n\x1a\n", "PNG", _png_size),
    (b"\xff\xd8", "JPEG", _jpeg_size),
    (b"BM", "BMP", _bmp_size),
    (b"II*\x00", "TIFF", _tiff_size),
    (b"MM\x00*", "TIFF", _tiff_size),
    (b"II+\x00", "TIFF", _tiff_size),
    (b"MM\x00+", "TIFF", _tiff_size),  # BigTIFF: refused by _tiff_size
)


def to_gray_uint8(img: np.ndarray) -> np.ndarray:
    """Convert a decoded OpenCV image (any depth, 1/3/4 channels) to 2-D uint8."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        code = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}.get(img.shape[2])
        if code is None:
            raise UnreadableImage(f"unsupported number of channels: {img.shape[2]}")
        img = cv2.cvtColor(img, code)
    if img.ndim != 2:
        raise UnreadableImage(f"unsupported image shape {img.shape}")
    if min(img.shape) < MIN_SIDE:
        raise UnreadableImage(f"too small ({img.shape[1]}x{img.shape[0]}); need at least {MIN_SIDE}x{MIN_SIDE}")
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return np.ascontiguousarray(img)


def pad_to_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    side = max(h, w)
    if h == w:
        return img
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=0)


def resize_square(img: np.ndarray, size: int, is_mask: bool = False) -> np.ndarray:
    """Pad to square, then resize to size x size (see the module docstring for why)."""
    img = pad_to_square(img)
    if img.shape[0] == size:
        out = img
    elif is_mask:
        out = cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)
    else:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
        out = cv2.resize(img, (size, size), interpolation=interp)
    if is_mask:
        out = cv2.threshold(out, 127, 255, cv2.THRESH_BINARY)[1]  # > 127 -> 255, else 0
    return out


def load_for_model(
    path: str | os.PathLike,
    size: int,
    lung_mask: str,
    mask_path: str | os.PathLike | None = None,
    lungs: np.ndarray | str | None = None,
) -> np.ndarray:
    """The exact preprocessing of training data: read, gray uint8, (lung focus,) pad, resize."""
    return prepare_image(path, size, lung_mask, mask_path, lungs=lungs)[0]


def prepare_image(
    path: str | os.PathLike,
    size: int,
    lung_mask: str,
    mask_path: str | os.PathLike | None = None,
    lesion_path: str | os.PathLike | None = None,
    lungs: np.ndarray | str | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(image, lung mask, lesion mask) as the model and the Grad-CAM scores take them, size x size;
    a mask is None where there is none. The one implementation of the preprocessing (prepare,
    predict, external): under lung_mask crop or mask the image is cut to its lungs first, and its
    masks with it.

    The lungs it is cut to are the mask at mask_path, unless `lungs` is given: a 0/255 mask at the
    image's shape (a segmenter's, lungdx.segment), or WHOLE (lungs not found: the image is used
    whole). The lung mask returned is the one at mask_path where there is one (so a true mask
    scores what a segmenter's lungs cut), else `lungs`."""
    img = read_gray(path)
    shape = img.shape
    lung = _native_or_none(mask_path, shape, "lung mask")
    lesion = _native_or_none(lesion_path, shape, "lesion mask")
    focus = lung if lungs is None else lungs
    box = None
    if lung_mask != "none" and not (isinstance(focus, str) and focus == WHOLE):
        if not isinstance(focus, np.ndarray):  # None: lungs neither given nor at mask_path
            raise UnreadableImage(f"no lung mask to cut it to (prepare.lung_mask {lung_mask})")
        try:
            img, box = focus_on_lungs(img, focus, lung_mask)
        except UnreadableImage as exc:  # the image read: what failed is its lung mask
            raise UnreadableImage(f"lung mask {mask_path if lungs is None else '(from the segmenter)'}: {exc}") from exc
    if lung is None and lungs is not None and not isinstance(lungs, str):
        lung = lungs

    def cut(mask: np.ndarray | None) -> np.ndarray | None:
        if mask is None:
            return None
        top, bottom, left, right = box if box is not None else (0, shape[0], 0, shape[1])
        return resize_square(mask[top:bottom, left:right], size, is_mask=True)

    return resize_square(img, size), cut(lung), cut(lesion)


def _native_or_none(path: str | os.PathLike | None, shape: tuple[int, int], what: str) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return native_mask(path, shape)
    except UnreadableImage as exc:
        raise UnreadableImage(f"{what} {path}: {exc}") from exc


def check_lung_masks(lacking: list[str], total: int, lung_mask: str, setting: str, way_out: str = "") -> None:
    """Under lung_mask crop or mask every image needs its lung mask: name how many lack one, and
    the first few (no silent fallback to the whole image); `setting` says whose lung_mask it is,
    `way_out` what else the user can do."""
    if lung_mask != "none" and lacking:
        shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        raise LungdxError(
            f"{setting} is {lung_mask}, but {len(lacking)} of {total} images have no lung mask "
            f"(<Class>/masks/<same file name> in the source): {shown}; add their masks"
            + (f", {way_out}" if way_out else "")
        )


def native_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """The mask at `path` as a 0/255 array of the image's (height, width): lung where above 127,
    or where above 0 in a mask stored as 0/1. A mask of another size is scaled (Kaggle's are
    256x256 for 299x299 images); one of another aspect ratio is not this image's."""
    mask = read_gray(path)
    if mask.max() > 1:
        grey = np.count_nonzero((mask >= GREY_LOW) & (mask <= GREY_HIGH)) / mask.size
        if grey > MAX_GREY_SHARE:
            raise UnreadableImage(
                f"not black and white: {grey:.0%} of its pixels are grey (over "
                f"{MAX_GREY_SHARE:.0%}); a lung mask has lungs white (255, or 1) on black"
            )
    (h, w), (height, width) = mask.shape, shape
    if abs(math.log((w / h) / (width / height))) > MASK_ASPECT_TOLERANCE:
        raise UnreadableImage(
            f"{w}x{h}, not the shape of its {width}x{height} image (another aspect ratio): not this image's mask"
        )
    if (h, w) != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.threshold(mask, 127 if mask.max() > 1 else 0, 255, cv2.THRESH_BINARY)[1]


def check_lung_mask(mask: np.ndarray) -> None:
    """A lung mask (0/255 at its image's shape) must show lungs: real ones cover 17-59% of an image."""
    share = np.count_nonzero(mask) / mask.size
    if share == 0:
        raise UnreadableImage("empty (no lung pixel): no lungs to cut the image to")
    if share < MIN_LUNG_SHARE:
        raise UnreadableImage(f"covers {share:.2%} of the image, under {MIN_LUNG_SHARE:.0%}: not a lung mask")
    if share > MAX_LUNG_SHARE:
        raise UnreadableImage(
            f"covers {share:.0%} of the image, over {MAX_LUNG_SHARE:.0%}: not a lung mask "
            "(lungs are white on black; real ones cover 17-59%)"
        )


def lung_box(mask: np.ndarray, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom and right exclusive: the mask's bounding box widened
    by `margin` of its height and width on each side, clipped to the image."""
    check_lung_mask(mask)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dy, dx = round(margin * (bottom - top)), round(margin * (right - left))
    h, w = mask.shape
    return int(max(0, top - dy)), int(min(h, bottom + dy)), int(max(0, left - dx)), int(min(w, right + dx))


def focus_on_lungs(img: np.ndarray, mask: np.ndarray, policy: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(the image cut to its lungs, the box cut) for policy crop or mask; `mask` is 0/255 at the
    image's shape (native_mask). Under `mask`, pixels beyond the dilated lungs become black."""
    if policy not in ("crop", "mask"):
        raise ValueError(f"lung focus policy must be crop or mask, not {policy!r}")
    if policy == "mask":
        radius = max(1, round(MASK_DILATION * max(img.shape)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        img = np.where(cv2.dilate(mask, kernel) > 0, img, 0).astype(np.uint8)
    top, bottom, left, right = box = lung_box(mask)
    return np.ascontiguousarray(img[top:bottom, left:right]), box


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV only fails here on invalid arrays
        raise ValueError(f"could not encode {path} as PNG")
    Path(path).write_bytes(buf.tobytes())
