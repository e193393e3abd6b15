"""Every supported image form becomes the same 8-bit grayscale array."""

import cv2
import numpy as np
import pytest

from lungdx.images import UnreadableImage, load_for_model, read_gray, resize_square
from tests.conftest import write_image, xray


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
    out = load_for_model(big, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8 and (out == 90).all()
