"""Tests of skicm.image_loading: identity keys and decoding to 8-bit RGB (no model needed)."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from skicm.image_loading import as_image_list, image_keys, image_keys_and_missing, load_rgb
from skicm.interventions import ImageInterventions


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


def test_missing_files_are_returned_not_raised_by_image_keys_and_missing(tmp_path):
    keys, missing = image_keys_and_missing([_noise(0), tmp_path / "absent.jpg"])
    assert keys[0].startswith("px:") and keys[1] == ""
    assert len(missing) == 1 and missing[0][0] == 1 and "absent.jpg" in missing[0][1]


def test_channels_first_arrays_are_named_with_the_fix():
    # (3, 32, 4) is a legal RGBA image 3 pixels high, and more likely a 32 x 4 channels-first one.
    with pytest.warns(UserWarning, match=r"channels-first.*X\[1\] \(3, 32, 4\).*np\.moveaxis"):
        keys = image_keys([_noise(0), np.zeros((3, 32, 4), np.uint8)])
    assert len(keys) == 2
    with pytest.raises(ValueError, match=r"\(3, 32, 40\).*channels-first.*np\.moveaxis"):
        image_keys([np.zeros((3, 32, 40), np.uint8)])
    with pytest.raises(
        ValueError, match=r"channels-first \(N, C, H, W\).*np\.moveaxis\(X, 1, -1\)"
    ):
        as_image_list(np.zeros((2, 3, 32, 40), np.uint8))
    # Ordinary images draw no warning: (4, 4, 3) is small but not ambiguous, (32, 40, 3) usual.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image_keys([np.zeros((4, 4, 3), np.uint8), _noise(1, (32, 40, 3)), _noise(2, (3, 40))])


def test_errors_name_the_estimator_that_was_given_x():
    from skicm import ImageEmbedder

    embedder = ImageEmbedder("skicm.model_configs:tiny_image_model", device="cpu")
    with pytest.raises(ValueError, match="X is empty: ImageEmbedder needs at least one image"):
        embedder.transform([])
    with pytest.raises(ValueError, match="given to ImageEmbedder must have exactly one column"):
        pd = pytest.importorskip("pandas")
        embedder.transform(pd.DataFrame({"a": ["x.png"], "b": ["y.png"]}))
    with pytest.raises(ValueError, match="ImageInterventions needs at least one image"):
        ImageInterventions().apply([])


def test_long_error_lists_are_truncated(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        image_keys([tmp_path / f"absent{i}.jpg" for i in range(2000)])
    message = str(raised.value)
    assert message.startswith("2000 image file(s) not found")
    assert "and 1980 more" in message and "absent19.jpg" in message
    assert "absent20.jpg" not in message and len(message) < 3000
    with pytest.raises(ValueError, match="and 30 more"):
        image_keys([object()] * 50)


# ----------------------------------------------------------------------- keys: what they cover
def test_array_key_covers_shape_and_dtype():
    data = _noise(0, (6, 8, 3))
    same_bytes_other_shape = data.reshape(8, 6, 3)
    assert image_keys([data]) != image_keys([same_bytes_other_shape])
    gray = _noise(1, (4, 6))
    as_uint16 = gray.view(np.uint16)  # same bytes, read as 16-bit pixels (4, 3)
    assert image_keys([gray]) != image_keys([as_uint16])
    assert image_keys([data]) == image_keys([data.copy()])


def test_pil_key_covers_the_size():
    data = _noise(0, (6, 8, 3))
    wide, tall = Image.fromarray(data), Image.fromarray(data.reshape(8, 6, 3))
    assert wide.tobytes() == tall.tobytes()
    assert image_keys([wide]) != image_keys([tall])
    assert image_keys([wide]) == image_keys([Image.fromarray(data.copy())])


# ------------------------------------------------------------------------- EXIF orientation
# Orientation tag -> how the stored pixels are turned to show the picture upright (EXIF 2.32,
# written out here independently of Pillow).
_UPRIGHT_FROM_STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # stored turned 90 degrees anticlockwise: turn it clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _blocky(seed, shape=(32, 48)):
    """Noise of uniform 8x8 blocks: a quality-100 4:4:4 JPEG of it decodes almost exactly."""
    blocks = _noise(seed, (shape[0] // 8, shape[1] // 8, 3))
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)


def _save_jpeg(path, stored, orientation=None):
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=100, subsampling=0, exif=exif.tobytes())
    return path


def _identity_dataset(items, mode):
    from torchvision.transforms import Compose

    from skicm.image_loading import ImageDecodingDataset

    return ImageDecodingDataset(items, Compose([]), mode=mode)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_decoder_turns_a_tagged_jpeg_upright(tmp_path, orientation):
    from skicm.image_loading import _rgb_chw

    stored = _blocky(orientation)
    path = _save_jpeg(tmp_path / "photo.jpg", stored, orientation)
    upright = np.ascontiguousarray(_UPRIGHT_FROM_STORED[orientation](stored))
    decoded = {
        "Pillow": np.asarray(load_rgb(path)),
        "torchvision": _rgb_chw(path).permute(1, 2, 0).numpy(),
        "PIL image": np.asarray(load_rgb(Image.open(path))),
    }
    for mode in ("pil", "tensor", "raw_jpeg"):
        _, pixels, jpeg_bytes, error = _identity_dataset([path], mode)[0]
        assert error is None
        if mode == "raw_jpeg" and orientation == 1:
            assert pixels is None and jpeg_bytes.tobytes() == path.read_bytes()
            continue
        # A file that must be turned is decoded here, not handed raw to the accelerator.
        assert jpeg_bytes is None
        decoded[f"dataset mode {mode}"] = pixels.transpose(1, 2, 0)
    for name, pixels in decoded.items():
        assert pixels.shape == upright.shape, name
        difference = np.abs(pixels.astype(int) - upright)
        assert difference.max() <= 2, name
    if orientation != 1:
        assert upright.shape != stored.shape or np.abs(upright.astype(int) - stored).mean() > 30


def test_pil_image_keys_follow_the_orientation(tmp_path):
    from PIL import ImageOps

    path = _save_jpeg(tmp_path / "photo.jpg", _blocky(0), orientation=6)
    tagged = Image.open(path)
    raw_pixels = Image.fromarray(np.asarray(tagged))  # the stored pixels, without the tag
    upright = ImageOps.exif_transpose(Image.open(path))  # turned, and the tag removed
    assert image_keys([tagged]) == image_keys([upright])  # the same picture
    assert image_keys([tagged]) != image_keys([raw_pixels])
    # Turned once only: the upright image has lost its tag.
    np.testing.assert_array_equal(np.asarray(load_rgb(upright)), np.asarray(load_rgb(tagged)))


def test_file_keys_are_not_those_of_orientation_blind_decoders(tmp_path):
    from skicm.image_loading import _file_key

    # Stores filled by decoders that ignored the orientation hold the sideways picture's
    # embedding under the bare file identity; those entries must not be found again.
    path = _save_jpeg(tmp_path / "photo.jpg", _blocky(0), orientation=6)
    (key,) = image_keys([path])
    assert key != _file_key(path) and key.startswith(_file_key(path))


def test_embedding_of_a_tagged_photo_is_the_upright_pictures(tmp_path):
    from skicm import CLIPEmbedder
    from skicm.model_configs import register_tiny_clip

    stored = _blocky(3, (48, 64))
    path = _save_jpeg(tmp_path / "photo.jpg", stored, orientation=6)
    upright = np.ascontiguousarray(np.rot90(stored, -1))
    for decoder in ("torchvision", "pil"):
        embedder = CLIPEmbedder(
            register_tiny_clip(), pretrained=None, device="cpu", batch_size=4, num_workers=0,
            decoder=decoder, store=None, progress=False,
        )  # fmt: skip
        Z = embedder.transform([path, upright, stored])
        assert np.abs(Z[0] - Z[1]).max() < 1e-3, decoder
        assert np.abs(Z[0] - Z[2]).max() > 100 * np.abs(Z[0] - Z[1]).max() + 1e-2, decoder


# ------------------------------------------------------------------ decompression-bomb limit
def _flat_gray_jpeg(width, height):
    """A real baseline grayscale JPEG of mid-gray, 2 bits per 8x8 block.

    Huffman tables with one code each (DC difference 0, end of block) make every block the two
    bits ``00``: a 20000 x 20000 image is 1.6 MB of zero bytes, and decodes to 400 M pixels.
    """
    import struct

    def segment(marker, payload):
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    blocks = -(-width // 8) * -(-height // 8)
    return b"".join(
        [
            b"\xff\xd8",
            segment(0xDB, b"\x00" + b"\x01" * 64),  # quantisation table 0: all ones
            segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"),
            segment(0xC4, b"\x00\x01" + b"\x00" * 15 + b"\x00"),  # DC table: one code, 0
            segment(0xC4, b"\x10\x01" + b"\x00" * 15 + b"\x00"),  # AC table: one code, EOB
            segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
            b"\x00" * -(-blocks * 2 // 8),
            b"\xff\xd9",
        ]
    )


def test_flat_gray_jpeg_is_a_real_jpeg(tmp_path):
    from skicm.image_loading import _rgb_chw

    path = tmp_path / "gray.jpg"
    path.write_bytes(_flat_gray_jpeg(64, 40))
    assert np.asarray(load_rgb(path)).shape == (40, 64, 3)
    assert set(np.unique(np.asarray(load_rgb(path)))) == {128}
    assert set(np.unique(_rgb_chw(path).numpy())) == {128}


_BOMB_SCRIPT = """
import resource, sys
import torchvision.io  # imported before the measurement starts
from PIL import Image
from skicm.image_loading import _rgb_chw, load_rgb
from torchvision.transforms import Compose
from skicm.image_loading import ImageDecodingDataset
path = sys.argv[1]
decode_jpeg = torchvision.io.decode_jpeg
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
messages = []
for decode in (_rgb_chw, load_rgb):
    try:
        decode(path)
    except Image.DecompressionBombError as error:
        messages.append(str(error))
for mode in ("pil", "tensor", "raw_jpeg"):
    messages.append(ImageDecodingDataset([path], Compose([]), mode=mode)[0][3])
# Decoded at 1/8 the bomb would fit in memory: the limit is still the declared size's.
from torchvision.transforms import Resize
from skicm.image_loading import DecodeTarget
for mode in ("pil", "tensor", "raw_jpeg"):
    dataset = ImageDecodingDataset([path], Compose([Resize(224)]), mode=mode, decode="reduced")
    messages.append(dataset[0][3])
try:
    load_rgb(path, DecodeTarget("shortest", 224))
except Image.DecompressionBombError as error:
    messages.append(str(error))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)
print(repr(messages))
"""


def test_every_decoder_rejects_a_decompression_bomb_from_its_header(tmp_path):
    import ast
    import subprocess
    import sys

    path = tmp_path / "bomb.jpg"
    path.write_bytes(_flat_gray_jpeg(20000, 20000))  # 1.6 MB; 1.2 GB once decoded to RGB
    run = subprocess.run(
        [sys.executable, "-c", _BOMB_SCRIPT, str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    grown_mib, messages = run.stdout.splitlines()
    messages = ast.literal_eval(messages)
    assert len(messages) == 9
    for message in messages:
        assert message is not None and str(path) in message, message
        assert "400000000 pixels" in message and "MAX_IMAGE_PIXELS" in message, message
    assert all(m.startswith("DecompressionBombError") for m in messages[2:8])
    assert int(grown_mib) < 100  # the decoded image would take 1144 MiB


def test_the_limit_follows_max_image_pixels(tmp_path, monkeypatch):
    from PIL import Image

    from skicm.image_loading import _rgb_chw

    path = tmp_path / "gray.jpg"
    path.write_bytes(_flat_gray_jpeg(400, 300))
    png = tmp_path / "gray.png"
    Image.new("L", (400, 300), 128).save(png)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # 2x limit: 100,000 < 120,000
    for decode in (_rgb_chw, load_rgb):
        for file in (path, png):
            with pytest.raises(Image.DecompressionBombError, match=re.escape(repr(str(file)))):
                decode(file)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert tuple(_rgb_chw(path).shape) == (3, 300, 400)
    assert tuple(_rgb_chw(png).shape) == (3, 300, 400)


def test_xmp_orientation_is_used_when_exif_has_none(tmp_path):
    from skicm.image_loading import _rgb_chw

    stored = _blocky(5)
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    path = tmp_path / "xmp.jpg"
    Image.fromarray(stored).save(path, quality=100, subsampling=0, xmp=xmp)
    upright = np.rot90(stored, -1)
    for pixels in (np.asarray(load_rgb(path)), _rgb_chw(path).permute(1, 2, 0).numpy()):
        assert pixels.shape == upright.shape
        assert np.abs(pixels.astype(int) - upright).max() <= 2


# ---------------------------------------------------------------------------- collection images
def _shard(path, members):
    """An uncompressed tar of ``(name, bytes)`` members (a WebDataset shard)."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _photo_jpeg(width, height, orientation=1):
    import io

    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    file = io.BytesIO()
    ramp = np.add.outer(np.arange(height), np.arange(width)) % 256
    pixels = np.stack([ramp, ramp[::-1], 255 - ramp], axis=2)  # detail at every scale
    Image.fromarray(pixels.astype(np.uint8)).save(
        file, format="JPEG", quality=90, exif=exif.tobytes()
    )
    return file.getvalue()


def test_collection_images_decode_as_files_pixel_for_pixel(tmp_path):
    """Every decoder of a tar member gives the pixels of the same bytes in a file: EXIF
    orientation, the reduced decode of a large JPEG, other formats; errors name the member."""
    pytest.importorskip("webdataset")
    from skicm.datasets import load_image_collection
    from skicm.image_loading import (
        CollectionImage,
        DecodeTarget,
        _rgb_chw,
        describe_image,
    )

    members = {
        "turned.jpg": _photo_jpeg(700, 500, orientation=6),
        "large.jpg": _photo_jpeg(1400, 1000),
        "plain.png": None,
    }
    png = tmp_path / "plain.png"
    Image.fromarray(_noise(1, (9, 7, 3))).save(png)
    members["plain.png"] = png.read_bytes()
    for name, data in members.items():
        (tmp_path / name).write_bytes(data)
    shard = _shard(tmp_path / "shard.tar", [(name, data) for name, data in members.items()])
    items = list(load_image_collection(shard).images)
    assert all(isinstance(item, CollectionImage) for item in items)
    target = DecodeTarget("shortest", 100)  # lets the 1400 x 1000 photo decode at 1/2
    assert target.scale(1400, 1000) == 2
    for item, name in zip(items, members):
        file = tmp_path / name
        for reduce in (None, target):
            expected = np.asarray(load_rgb(file, reduce))
            np.testing.assert_array_equal(np.asarray(load_rgb(item, reduce)), expected)
            np.testing.assert_array_equal(
                _rgb_chw(item, reduce).numpy(), _rgb_chw(file, reduce).numpy()
            )
        assert describe_image(items, items.index(item)) == (
            f"member {name!r} of the WebDataset shard {str(shard)!r}"
        )
    assert np.asarray(load_rgb(items[0])).shape == (700, 500, 3)  # upright: turned by EXIF 6
    # One item is one image: passed alone it is refused as a single path would be.
    with pytest.raises(ValueError, match=r"X is a single image \(CollectionImage\)"):
        as_image_list(items[0])
    # The key names the shard's identity and the member, and reads nothing.
    keys = image_keys(items)
    assert len(set(keys)) == 3 and all(key.endswith(f"#{n}") for key, n in zip(keys, members))
    assert all(str(shard) in key and str(os.stat(shard).st_ino) in key for key in keys)


def test_collection_images_follow_the_bomb_limit(tmp_path, monkeypatch):
    pytest.importorskip("webdataset")
    from skicm.datasets import load_image_collection
    from skicm.image_loading import _rgb_chw

    shard = _shard(tmp_path / "s.tar", [("gray.jpg", _flat_gray_jpeg(400, 300))])
    (item,) = load_image_collection(shard).images
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # 2x limit: 100,000 < 120,000
    for decode in (_rgb_chw, load_rgb):
        with pytest.raises(Image.DecompressionBombError, match=r"member 'gray\.jpg' of the"):
            decode(item)
