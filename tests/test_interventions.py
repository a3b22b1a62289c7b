"""Image and text interventions: determinism, the paper's transforms, shapes, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps
from sklearn.base import clone
from torchvision import transforms as T

from skicm.embedding import CLIPEmbedder
from skicm.interventions import (
    PAPER_IMAGE_INTERVENTIONS,
    ImageInterventions,
    TextInterventions,
    clear_text_cache,
    paper_image_transforms,
)
from skicm.projection import InvariantProjector
from skicm.zero_shot import ZeroShotClassifier


def _scene(seed, size=(40, 32)):
    """A small RGB scene: a coloured shape on a gradient background (uint8, H x W x 3)."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(30, 220, width, dtype=np.float64)
    background = np.stack([ramp, ramp[::-1], np.full(width, rng.uniform(0, 255))], axis=-1)
    image = Image.fromarray(np.broadcast_to(background, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    x, y = rng.integers(2, 12, size=2)
    draw.ellipse([x, y, x + 16, y + 16], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(image)


@pytest.fixture(scope="module")
def scenes():
    return np.stack([_scene(seed) for seed in range(6)])


@pytest.fixture(scope="module")
def embedder(tiny_clip_name):
    return CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", progress=False)


# ----------------------------------------------------------------------------- image interventions
def test_image_interventions_are_seeded_and_deterministic(scenes):
    torch_state = torch.get_rng_state()
    first = ImageInterventions(random_state=0).apply(scenes)
    assert torch.equal(torch.get_rng_state(), torch_state), "global torch RNG must be untouched"
    second = ImageInterventions(random_state=0).apply(scenes)
    other = ImageInterventions(random_state=1).apply(scenes)
    assert first.shape == scenes.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    # Another seed draws other interventions: the counterparts differ where the draws do.
    _, first_names = ImageInterventions(random_state=0).apply(scenes, return_transforms=True)
    _, other_names = ImageInterventions(random_state=1).apply(scenes, return_transforms=True)
    assert (first_names != other_names).any()
    for a, b, name, other_name in zip(first, other, first_names, other_names):
        if name != other_name:
            assert not np.array_equal(a, b), (name, other_name)
    # Counterpart i depends on (seed, i), not on the images after it.
    np.testing.assert_array_equal(ImageInterventions(random_state=0).apply(scenes[:3]), first[:3])
    # Every counterpart differs from its image (each transform always fires).
    assert all(not np.array_equal(a, b) for a, b in zip(first, scenes))


def test_image_interventions_never_seed_cuda(scenes, monkeypatch):
    """Only the CPU generator is seeded (inside fork_rng); torch.manual_seed would also re-seed
    every CUDA device, which fork_rng(devices=[]) does not restore."""
    cuda_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", cuda_seeds.append)
    first = ImageInterventions(random_state=0).apply(scenes)
    jitter = ImageInterventions(T.ColorJitter(brightness=0.8), random_state=0).apply(scenes)
    assert cuda_seeds == []
    # The draws stay seeded without them.
    np.testing.assert_array_equal(ImageInterventions(random_state=0).apply(scenes), first)
    again = ImageInterventions(T.ColorJitter(brightness=0.8), random_state=0).apply(scenes)
    np.testing.assert_array_equal(again, jitter)
    assert cuda_seeds == []


#: PIL references of the deterministic interventions (torchvision calls these on PIL images).
EXACT = {
    "invert": ImageOps.invert,
    "grayscale": lambda image: image.convert("L").convert("RGB"),
    "posterize": lambda image: ImageOps.posterize(image, 3),
    "solarize": lambda image: ImageOps.solarize(image, 128),
    "equalize": ImageOps.equalize,
}


def _total_variation(image):
    image = image.astype(np.float64)
    return np.abs(np.diff(image, axis=0)).sum() + np.abs(np.diff(image, axis=1)).sum()


def _check_made_by(counterpart, image, name):
    """Assert that ``counterpart`` is what intervention ``name`` makes of ``image``."""
    if name in EXACT:
        np.testing.assert_array_equal(counterpart, EXACT[name](Image.fromarray(image)), name)
    elif name == "gaussian_blur":
        # A blur averages neighbours: within the image's range per channel, and smoother.
        assert (counterpart.min(axis=(0, 1)) >= image.min(axis=(0, 1))).all()
        assert (counterpart.max(axis=(0, 1)) <= image.max(axis=(0, 1))).all()
        assert _total_variation(counterpart) < _total_variation(image)
    elif name == "color_jitter":
        # Colours move, the picture stays: luminance keeps its layout.
        luminance = [
            np.asarray(Image.fromarray(a).convert("L"), float).ravel() for a in (image, counterpart)
        ]
        assert np.corrcoef(*luminance)[0, 1] > 0.8
        assert np.abs(counterpart.astype(int) - image).mean() > 5
    else:
        raise AssertionError(f"unknown intervention {name!r}")


def test_each_counterpart_is_the_intervention_named_for_it():
    images = np.stack([_scene(seed) for seed in range(40)])
    counterparts, names = ImageInterventions(random_state=0).apply(images, return_transforms=True)
    assert names.shape == (40,)
    assert set(names) == set(PAPER_IMAGE_INTERVENTIONS)  # 40 draws cover the seven here
    for counterpart, image, name in zip(counterparts, images, names):
        _check_made_by(counterpart, image, name)
    # The same names come with the index, in the order (counterparts, index, names).
    again, index, same = ImageInterventions(random_state=0).apply(
        images, return_index=True, return_transforms=True
    )
    np.testing.assert_array_equal(again, counterparts)
    np.testing.assert_array_equal(index, np.arange(40))
    np.testing.assert_array_equal(same, names)
    # No draw leaves an image as it was: a blur too weak to change uint8 pixels is no intervention.
    blurred = ImageInterventions(["gaussian_blur"], random_state=0).apply(images)
    assert [i for i in range(40) if np.array_equal(blurred[i], images[i])] == []


def _blurred_impulse_centre(sigma, size=3):
    """Centre of a 255 impulse after a size x size Gaussian blur of this sigma (exact, float).

    torchvision's kernel is separable, ``exp(-x^2 / (2 sigma^2))`` on ``x = -1, 0, 1``,
    normalised; the neighbours of the impulse are 0, so the centre is ``255 * w0^2``.
    """
    x = np.arange(size) - size // 2
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return 255 * (weights[size // 2] / weights.sum()) ** 2


def test_blur_sigma_is_drawn_between_half_and_two():
    """The paper's blur draws sigma in [0.5, 2.0]: read back from how much an impulse spreads.

    On a 32 x 32 image the kernel is 3 x 3 (10 % of the side, odd, at least 3). The centre after
    the blur falls strictly as sigma grows: 157.9 at sigma 0.5, 33.4 at 2.0 (251.1 at 0.3).
    torchvision rounds to uint8, so every centre lies within 0.5 of the exact value of its
    sigma. 80 draws: the chance that none falls within 0.1 of the lower bound is
    (1 - 0.1 / 1.5) ** 80 = 0.004 (and the seed is fixed).
    """
    impulse = np.zeros((32, 32, 3), np.uint8)
    impulse[16, 16] = 255
    blurred = ImageInterventions(["gaussian_blur"], random_state=0).apply(np.stack([impulse] * 80))
    centres = blurred[:, 16, 16, 0].astype(float)
    assert centres.max() <= _blurred_impulse_centre(0.5) + 0.5  # no sigma below 0.5
    assert centres.max() >= _blurred_impulse_centre(0.6) - 0.5  # and sigmas near 0.5 occur
    assert centres.min() >= _blurred_impulse_centre(2.0) - 0.5  # no sigma above 2
    assert centres.min() <= _blurred_impulse_centre(1.9) + 0.5
    assert paper_image_transforms()["gaussian_blur"].sigma == (0.5, 2.0)


def test_custom_interventions_are_named_and_told_apart(scenes):
    brighter = lambda image: ImageOps.autocontrast(image)  # noqa: E731
    darker = lambda image: Image.eval(image, lambda v: v // 2)  # noqa: E731
    counterparts, names = ImageInterventions(
        [ImageOps.mirror, brighter, darker, "invert"], random_state=0
    ).apply(scenes, return_transforms=True)
    # Two lambdas share a __name__: their position in transforms tells them apart.
    assert set(names) <= {"mirror", "<lambda>[1]", "<lambda>[2]", "invert"}
    assert len(set(names)) >= 3
    references = {
        "mirror": ImageOps.mirror,
        "<lambda>[1]": brighter,
        "<lambda>[2]": darker,
        "invert": ImageOps.invert,
    }
    for counterpart, image, name in zip(counterparts, scenes, names):
        np.testing.assert_array_equal(counterpart, references[name](Image.fromarray(image)))
    _, jitter_names = ImageInterventions(T.ColorJitter(0.5)).apply(
        scenes[:2], return_transforms=True
    )
    assert jitter_names.tolist() == ["ColorJitter", "ColorJitter"]


@pytest.mark.parametrize("name", PAPER_IMAGE_INTERVENTIONS)
def test_each_paper_transform_changes_the_image_but_not_its_size(scenes, name):
    out, names = ImageInterventions([name], random_state=0).apply(scenes, return_transforms=True)
    assert out.shape == scenes.shape
    assert names.tolist() == [name] * len(scenes)
    for counterpart, image in zip(out, scenes):
        assert not np.array_equal(counterpart, image)
        _check_made_by(counterpart, image, name)
    image = scenes.astype(np.int64)
    if name == "invert":
        np.testing.assert_array_equal(out, 255 - scenes)
    elif name == "grayscale":
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    elif name == "posterize":
        assert not (out & 0b00011111).any(), "3 bits kept: the low 5 bits are zero"
    elif name == "solarize":
        np.testing.assert_array_equal(out, np.where(image >= 128, 255 - image, image))


def test_paper_transforms_are_the_seven_of_the_paper():
    assert tuple(paper_image_transforms()) == PAPER_IMAGE_INTERVENTIONS
    assert len(PAPER_IMAGE_INTERVENTIONS) == 7


def test_several_counterparts_per_image_with_source_index(scenes):
    interventions = ImageInterventions(n_per_image=4, random_state=0)
    counterparts, index, names = interventions.apply(
        scenes, return_index=True, return_transforms=True
    )
    assert counterparts.shape == (4 * len(scenes), *scenes.shape[1:])
    np.testing.assert_array_equal(index, np.repeat(np.arange(len(scenes)), 4))
    # Each counterpart is its source image under the intervention named for it.
    for counterpart, source, name in zip(counterparts, index, names):
        _check_made_by(counterpart, scenes[source], name)
    # The copies of one image are separate draws.
    assert any(len(set(names[4 * i : 4 * i + 4])) > 1 for i in range(len(scenes)))
    np.testing.assert_array_equal(
        counterparts[::4][:1], ImageInterventions(random_state=0).apply(scenes[:1])
    )


def test_paths_pil_and_arrays_in_out(tmp_path, scenes):
    paths = []
    for i, scene in enumerate(scenes[:2]):
        paths.append(tmp_path / f"scene{i}.png")
        Image.fromarray(scene).save(paths[-1])
    items = [str(paths[0]), paths[1], Image.fromarray(scenes[2]), scenes[3]]
    out = ImageInterventions(random_state=0).apply(items)
    assert isinstance(out, list) and len(out) == 4
    assert all(isinstance(item, Image.Image) and item.mode == "RGB" for item in out[:3])
    assert isinstance(out[3], np.ndarray) and out[3].shape == scenes[3].shape
    assert all(item.size == (40, 32) for item in out[:3])
    # A file and the same pixels in memory get the same counterpart.
    np.testing.assert_array_equal(
        np.asarray(out[0]), ImageInterventions(random_state=0).apply(scenes[:1])[0]
    )


def test_custom_callables_and_torchvision_transforms(scenes):
    mirrored = ImageInterventions(ImageOps.mirror, random_state=0).apply(scenes)
    np.testing.assert_array_equal(mirrored, scenes[:, :, ::-1])
    jitter = T.ColorJitter(brightness=0.8)
    mixed = ImageInterventions([jitter, "invert"], random_state=3)
    np.testing.assert_array_equal(mixed.apply(scenes), clone(mixed).apply(scenes))
    # An array-returning callable is accepted.
    np.testing.assert_array_equal(
        ImageInterventions(lambda im: 255 - np.asarray(im)).apply(scenes), 255 - scenes
    )


def test_counterparts_embed_aligned(scenes, embedder):
    counterparts = ImageInterventions(random_state=0).apply(scenes)
    Z, Z_counterparts = embedder.transform(scenes), embedder.transform(counterparts)
    assert Z.shape == Z_counterparts.shape == (len(scenes), 32)
    # Row i is the embedding of counterpart i (aligned with image i), not of another one.
    for i in range(len(scenes)):
        np.testing.assert_allclose(
            Z_counterparts[i], embedder.transform(counterparts[i : i + 1])[0], atol=1e-6
        )
    # An intervention that changes nothing gives the images' own embeddings, exactly.
    unchanged = ImageInterventions(lambda image: image).apply(scenes)
    np.testing.assert_array_equal(embedder.transform(unchanged), Z)


def test_size_changing_intervention_is_rejected(scenes):
    resize = T.Resize((16, 16))
    with pytest.raises(
        ValueError, match=r"changed the size of images\[0\].*\(40, 32\) to \(16, 16\)"
    ):
        ImageInterventions(resize).apply(scenes)
    out = ImageInterventions(resize, preserve_size=False).apply(scenes)
    assert out.shape == (len(scenes), 16, 16, 3)
    crop = T.RandomCrop((16, 16))
    sizes = ImageInterventions([crop, "invert"], preserve_size=False, random_state=0).apply(scenes)
    assert {item.shape for item in sizes} == {(16, 16, 3), (32, 40, 3)}


def test_bad_image_interventions_raise_clear_errors(scenes):
    with pytest.raises(ValueError, match="unknown name 'sepia'"):
        ImageInterventions(["sepia"]).apply(scenes)
    with pytest.raises(ValueError, match="transforms is empty"):
        ImageInterventions([]).apply(scenes)
    with pytest.raises(ValueError, match="must return a PIL image"):
        ImageInterventions(T.ToTensor()).apply(scenes)
    with pytest.raises(ValueError, match="n_per_image"):
        ImageInterventions(n_per_image=0).apply(scenes)
    with pytest.raises(ValueError, match=r"images\[0\].*not a readable image"):
        ImageInterventions().apply(["/nonexistent/image.png"])


# ------------------------------------------------------------------------------ text interventions
TEMPLATES = ["a photo of a {}.", "a sketch of a {}.", "a painting of a {}."]


def test_domain_prompt_differences_have_the_right_shape_and_values(embedder):
    text = TextInterventions(embedder, class_names=["cat", "dog"], domain_templates=TEMPLATES)
    D = text.differences()
    assert D.shape == (2 * 3, 32) and D.dtype == np.float32
    pairs = text.domain_prompt_pairs()
    assert pairs[0] == ("a photo of a cat.", "a sketch of a cat.")
    assert pairs[-1] == ("a sketch of a dog.", "a painting of a dog.")
    expected = embedder.encode_text([a for a, _ in pairs]) - embedder.encode_text(
        [b for _, b in pairs]
    )
    np.testing.assert_allclose(D, expected, atol=1e-6)


def test_class_names_from_string_labels(embedder):
    text = TextInterventions(embedder, domain_templates=TEMPLATES)
    from_labels = text.differences(np.array(["dog", "cat", "dog"]))
    explicit = TextInterventions(embedder, class_names=["cat", "dog"], domain_templates=TEMPLATES)
    np.testing.assert_allclose(from_labels, explicit.differences(), atol=1e-6)
    mapped = TextInterventions(
        embedder, class_names={0: "cat", 1: "dog"}, domain_templates=TEMPLATES
    )
    np.testing.assert_allclose(mapped.differences([0, 1]), explicit.differences(), atol=1e-6)


def test_caption_and_image_caption_pairs(embedder, scenes):
    captions = [("a dog on grass", "a dog on snow"), ("a red car", "a blue car")]
    images = [(scenes[0], "a drawing of a ball"), (scenes[1], "a ball at night")]
    text = TextInterventions(
        embedder, domain_templates=None, caption_pairs=captions, image_caption_pairs=images
    )
    D = text.differences()
    assert D.shape == (4, 32)
    np.testing.assert_allclose(
        D[:2],
        embedder.encode_text([a for a, _ in captions])
        - embedder.encode_text([b for _, b in captions]),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        D[2:],
        embedder.transform(scenes[:2]) - embedder.encode_text([c for _, c in images]),
        atol=1e-6,
    )
    with_domains = clone(text).set_params(class_names=["ball"], domain_templates=TEMPLATES)
    pooled = with_domains.differences()
    assert pooled.shape == (3 + 4, 32)
    domain_only = clone(with_domains).set_params(caption_pairs=None, image_caption_pairs=None)
    np.testing.assert_allclose(pooled[:3], domain_only.differences(), atol=1e-6)
    np.testing.assert_allclose(pooled[3:], D, atol=1e-6)


def test_text_interventions_feed_the_projector(embedder, scenes):
    X = embedder.transform(scenes)
    y = np.array(["cat", "dog"] * 3)
    projector = InvariantProjector(
        n_components=4, interventions=TextInterventions(embedder, domain_templates=TEMPLATES)
    ).fit(X, y)
    assert projector.n_differences_seen_ == 2 * 3
    # The same projector as one given those differences directly.
    deltas = TextInterventions(embedder, class_names=["cat", "dog"], domain_templates=TEMPLATES)
    direct = InvariantProjector(n_components=4).fit(X, deltas=deltas.differences())
    np.testing.assert_allclose(projector.components_, direct.components_, atol=1e-6)


def test_domain_templates_from_a_json_file(embedder, tmp_path):
    path = tmp_path / "domains.json"
    path.write_text(json.dumps([t.replace("{}", "{c}") for t in TEMPLATES]))
    listed = TextInterventions(embedder, class_names=["cat", "dog"], domain_templates=TEMPLATES)
    for given in (path, str(path)):
        from_file = TextInterventions(embedder, class_names=["cat", "dog"], domain_templates=given)
        assert from_file.domain_prompt_pairs() == listed.domain_prompt_pairs()
        np.testing.assert_array_equal(from_file.differences(), listed.differences())


def test_class_prompt_files_are_refused_as_domain_templates(embedder, tmp_path):
    # Differences of one class's descriptions vary the class, not its domain.
    path = tmp_path / "cupl.json"
    path.write_text(json.dumps({"cat": ["a cat.", "a small cat."]}))
    text = TextInterventions(embedder, class_names=["cat"], domain_templates=path)
    with pytest.raises(
        ValueError,
        match=r"domain_templates: the prompt file '.*cupl\.json' maps classes to prompts, which "
        "describe each class, not its domains",
    ):
        text.differences()
    path.write_text("[not json")
    with pytest.raises(ValueError, match=r"prompt file '.*cupl\.json' is not JSON"):
        text.differences()


def test_text_intervention_errors(embedder):
    with pytest.raises(ValueError, match="class_names is required"):
        TextInterventions(embedder, domain_templates=TEMPLATES).differences()
    with pytest.raises(ValueError, match="class_names is required when the labels are not strings"):
        TextInterventions(embedder, domain_templates=TEMPLATES).differences([0, 1])
    with pytest.raises(ValueError, match="encoder is required"):
        TextInterventions(class_names=["cat"], domain_templates=TEMPLATES).differences()
    with pytest.raises(ValueError, match="domain_templates must be strings with exactly one"):
        TextInterventions(
            embedder, class_names=["cat"], domain_templates=["a {}", "b"]
        ).differences()
    with pytest.raises(ValueError, match="nothing to compare"):
        TextInterventions(embedder, class_names=["cat"], domain_templates=["a {}"]).differences()
    with pytest.raises(ValueError, match="caption_pairs must hold"):
        TextInterventions(embedder, domain_templates=None, caption_pairs=["one"]).differences()


@pytest.mark.parametrize(
    "class_names, labels, message",
    [
        ([], None, "class_names must be a non-empty list of strings"),
        (["cat", 3], None, "class_names must be a non-empty list of strings"),
        (["cat", "dog", "cat"], None, r"1 repeated name\(s\): \['cat'\] \(of 3 names\)"),
        (None, None, "class_names is required when fit gets no labels y"),
        (None, [0, 1], "class_names is required when the labels are not strings"),
    ],
)
def test_class_names_are_validated_alike_by_text_interventions_and_zero_shot(
    embedder, class_names, labels, message
):
    """One validation of class_names, shared by TextInterventions and ZeroShotClassifier."""
    text = TextInterventions(embedder, class_names=class_names, domain_templates=TEMPLATES)
    with pytest.raises(ValueError, match=message):
        text.differences(labels)
    X = np.zeros((2, 32)) if labels is None else np.zeros((len(labels), 32))
    with pytest.raises(ValueError, match=message):
        ZeroShotClassifier(class_names, encoder=embedder).fit(X, labels)


def test_text_embeddings_are_encoded_once_per_process(tiny_clip_name):
    clear_text_cache()
    embedder = CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", progress=False)
    through_text_tower = []
    hook = embedder._loaded_model().model.token_embedding.register_forward_hook(
        lambda module, inputs, output: through_text_tower.append(output.shape[0])
    )
    try:
        text = TextInterventions(embedder, class_names=["cat", "dog"], domain_templates=TEMPLATES)
        first = text.differences()
        assert sum(through_text_tower) == 2 * 3  # each distinct prompt once
        np.testing.assert_array_equal(clone(text).differences(), first)  # a clone: cached
        assert sum(through_text_tower) == 2 * 3
        # The cache holds raw vectors: normalize=False is answered from it too.
        unnormalized = clone(text).set_params(encoder=clone(embedder).set_params(normalize=False))
        assert not np.allclose(unnormalized.differences(), first)
        assert sum(through_text_tower) == 2 * 3
        # Another precision is another cache entry.
        bf16 = clone(text).set_params(encoder=clone(embedder).set_params(precision="bf16"))
        bf16.differences()
        assert sum(through_text_tower) == 2 * 2 * 3
        # skicm.interventions.clear_text_cache clears the embedder's cache.
        clear_text_cache()
        np.testing.assert_array_equal(clone(text).differences(), first)
        assert sum(through_text_tower) == 3 * 2 * 3
    finally:
        hook.remove()
        clear_text_cache()


@pytest.mark.parametrize("bad", ["a photo", "a {} of a {}", 3])
def test_domain_and_zero_shot_templates_share_one_check(bad):
    """Domain prompts and zero-shot templates reject the same templates (none or two ``{}``,
    not a string), each error naming its own parameter and the bad template; the zero-shot
    message also lists the named template sets."""
    from skicm.zero_shot import TEMPLATE_SETS, _check_templates

    good = "a photo of a {}."
    with pytest.raises(ValueError, match="domain_templates must be strings") as domain:
        TextInterventions(class_names=["cat"], domain_templates=[good, bad])._templates()
    with pytest.raises(ValueError, match="--templates must be strings") as zero_shot:
        _check_templates([good, bad], "--templates")
    for error in (domain, zero_shot):
        assert f"where [{bad!r}] are not" in str(error.value)
    assert str(list(TEMPLATE_SETS)) in str(zero_shot.value)
    TextInterventions(class_names=["cat"], domain_templates=[good, "a {} sketch"])._templates()
    _check_templates([good, "a {} sketch"])
