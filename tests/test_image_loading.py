"""Tests of skicm.image_loading: identity keys and decoding to 8-bit RGB (no model needed)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from skicm.image_loading import image_keys, load_rgb


def _noise(seed, shape=(32, 32, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_palette_images_with_other_palettes_have_other_keys():
    indices = np.random.default_rng(0).integers(0, 4, (40, 40), dtype=np.uint8)
    a = Image.fromarray(indices, mode="P")
    a.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0] + [0] * (252 * 3))
    b = Image.fromarray(indices, mode="P")
    b.putpalette([0, 0, 0, 50, 50, 50, 100, 100, 100, 200, 200, 200] + [0] * (252 * 3))
    assert not np.array_equal(np.asarray(load_rgb(a)), np.asarray(load_rgb(b)))
    assert image_keys([a]) != image_keys([b])
    # The key follows the encoded pixels: the same picture as RGB has the same key.
    assert image_keys([a]) == image_keys([a.convert("RGB")])


@pytest.mark.parametrize("brightest", [255, 256, 65535])
def test_16_bit_scaling_depends_on_the_mode_not_on_the_values(tmp_path, brightest):
    values = np.random.default_rng(0).integers(0, 256, (40, 40)).astype(np.uint16)
    values[0, 0] = brightest
    Image.fromarray(values).save(tmp_path / "gray16.png")
    expected = np.repeat((values >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    kinds = {
        "uint16 array": values,
        "PIL I;16": Image.fromarray(values),
        "PIL I": Image.fromarray(values).convert("I"),
        "16-bit PNG file": tmp_path / "gray16.png",
    }
    for name, item in kinds.items():
        np.testing.assert_array_equal(np.asarray(load_rgb(item)), expected, err_msg=name)


def test_32_bit_integer_and_float_images_are_rejected_naming_the_item(tmp_path):
    floats = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    Image.fromarray(floats, mode="F").save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"X\[1\].*mode 'F'"):
        image_keys([_noise(0), Image.fromarray(floats, mode="F")])
    wide = Image.fromarray(np.full((4, 4), 70000, dtype=np.int32), mode="I")
    with pytest.raises(ValueError, match=r"X\[0\].*mode 'I'.*65535"):
        image_keys([wide])
    with pytest.raises(ValueError, match="mode 'F'"):
        load_rgb(tmp_path / "float.tif")  # a file is reported with its name by the embedder


def test_file_rewritten_with_its_old_mtime_gets_a_new_key(tmp_path):
    path = tmp_path / "img.bmp"  # BMP: the size depends on the dimensions only
    Image.fromarray(_noise(0)).save(path)
    before = os.stat(path)
    key = image_keys([path])
    Image.fromarray(_noise(1)).save(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # what cp -p / rsync -t do
    assert os.stat(path).st_size == before.st_size
    assert image_keys([path]) != key


def test_file_replaced_by_another_file_gets_a_new_key(tmp_path):
    path, other = tmp_path / "img.bmp", tmp_path / "other.bmp"
    Image.fromarray(_noise(0)).save(path)
    key = image_keys([path])
    Image.fromarray(_noise(1)).save(other)
    info = os.stat(path)
    os.utime(other, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.replace(other, path)
    assert image_keys([path]) != key


def test_dot_dot_after_a_symlink_is_resolved_as_the_os_does(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "data" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    Image.fromarray(_noise(0)).save("img.bmp")
    Image.fromarray(_noise(1)).save(tmp_path / "data" / "img.bmp")
    os.symlink(tmp_path / "data" / "sub", "link")
    tricky = "link/../img.bmp"  # the OS opens data/img.bmp
    np.testing.assert_array_equal(np.asarray(load_rgb(tricky)), _noise(1))
    keys = image_keys(["img.bmp", tricky])
    assert keys[0] != keys[1]
    assert str(tmp_path / "data" / "img.bmp") in keys[1]
    os.remove("img.bmp")
    assert image_keys([tricky]) == keys[1:]  # still found: it exists


def test_missing_files_and_invalid_items_are_reported_together(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        image_keys([tmp_path / "absent.jpg", np.zeros((8, 8, 3)), 42])
    message = str(raised.value)
    assert "absent.jpg" in message and "X[1]" in message and "X[2]" in message


def test_long_error_lists_are_truncated(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        image_keys([tmp_path / f"absent{i}.jpg" for i in range(2000)])
    message = str(raised.value)
    assert message.startswith("2000 image file(s) not found")
    assert "and 1980 more" in message and "absent19.jpg" in message
    assert "absent20.jpg" not in message and len(message) < 3000
    with pytest.raises(ValueError, match="and 30 more"):
        image_keys([object()] * 50)
