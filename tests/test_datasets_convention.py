"""Every data set of skicm.datasets returns one Bunch convention (scikit-learn's key names)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import skicm.datasets
from skicm.datasets import (
    load_celeba_attributes,
    load_context_folders,
    load_group_metadata,
    load_image_collection,
    load_image_folders,
    load_mnist,
    load_waterbirds_metadata,
    make_colored_digits,
    make_colored_mnist,
    make_linear_scm,
    make_rotated_mnist,
    make_spurious_digits,
)
from skicm.image_loading import CollectionImage

# load_mnist returns the (images, labels) arrays that the MNIST protocols turn into data sets;
# IMAGENET_VARIANTS / imagenet_variant describe the classes of ImageNet's variants (no data).
NOT_DATA_SETS = {"load_mnist", "IMAGENET_VARIANTS", "imagenet_variant"}


def _image_folders(tmp_path):
    rng = np.random.default_rng(0)
    for domain, classes in {"photo": ["cat", "dog"], "sketch": ["cat", "dog", "fox"]}.items():
        for name in classes:
            (tmp_path / domain / name).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / domain / name / f"{i}.png")
    with pytest.warns(UserWarning, match="one domain only"):
        return load_image_folders(tmp_path)


def _write_image(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (value, 255 - value, 7)).save(path)


def _waterbirds(tmp_path):
    """Waterbirds' metadata.csv layout: every (y, place) group in every split."""
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    rows = [(y, split, place) for split in (0, 1, 2) for y in (0, 1) for place in (0, 1)]
    for i, (y, split, place) in enumerate(rows):
        name = f"{i:03d}.Bird_{y}/img_{i}.jpg"
        _write_image(tmp_path / name, 10 * i)
        lines.append(f"{i + 1},{name},{y},{split},{place},/b/bg_{i}.jpg")
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "metadata.csv"


def _celeba(tmp_path):
    """CelebA's official text files: a count, the attribute names, then the rows."""
    rows = {f"{i:06d}.jpg": ((1 - 2 * (i % 2), 1 - 2 * (i // 2 % 2)), i % 3) for i in range(12)}
    for name in rows:
        _write_image(tmp_path / "img_align_celeba" / name, 5)
    attributes = [str(len(rows)), "Blond_Hair Male "]
    attributes += [f"{n}  {'  '.join(f'{x:2d}' for x in v)}" for n, (v, _) in rows.items()]
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(attributes) + "\n")
    partition = [f"{n} {s}" for n, (_, s) in rows.items()]
    (tmp_path / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return tmp_path / "list_attr_celeba.txt"


def _context_folders(tmp_path):
    """MetaShift's layout: ROOT/class/context/image, five images a group."""
    for cls, context in (("cat", "sofa"), ("cat", "grass"), ("dog", "grass"), ("dog", "bench")):
        for i in range(5):
            _write_image(tmp_path / cls / context / f"{i}.png", i)
    return tmp_path


def _image_collection(tmp_path):
    """WebDataset shards (tar members with a label and a domain member), listed lazily."""
    import io
    import tarfile

    pytest.importorskip("webdataset")
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for i, (label, domain) in enumerate([("cat", "photo"), ("dog", "photo"), ("cat", "art")]):
            png = io.BytesIO()
            Image.new("RGB", (6, 5), (40 * i, 0, 0)).save(png, format="PNG")
            for member, data in ((".png", png.getvalue()), (".cls", label.encode()),
                                 (".domain", domain.encode())):  # fmt: skip
                info = tarfile.TarInfo(f"s{i}{member}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return load_image_collection(tmp_path / "shard-000.tar", label_key="cls", domain_key="domain")


def _digits():
    images, labels = load_mnist()  # sorted by digit: every 20th holds every class
    return images[::20], labels[::20]


# name -> (build(tmp_path), {old key: convention key it aliases})
DATA_SETS = {
    "make_linear_scm": (
        lambda tmp_path: make_linear_scm(n_samples=90, random_state=0),
        {"X": "data", "y": "target", "X_intervened": "data_intervened"},
    ),
    "make_colored_digits": (
        lambda tmp_path: make_colored_digits(random_state=0),
        {
            "X": "data",
            "X_swapped": "data_intervened",
            "X_gray": "data_gray",
            "y": "target",
            "environment": "environments",
            "images_swapped": "images_intervened",
        },
    ),
    "make_colored_mnist": (lambda tmp_path: make_colored_mnist(*_digits(), random_state=0), {}),
    "make_rotated_mnist": (lambda tmp_path: make_rotated_mnist(*_digits(), random_state=0), {}),
    "make_spurious_digits": (
        lambda tmp_path: make_spurious_digits(*_digits(), random_state=0),
        {},
    ),
    "load_waterbirds_metadata": (
        lambda tmp_path: load_waterbirds_metadata(_waterbirds(tmp_path)),
        {},
    ),
    "load_celeba_attributes": (lambda tmp_path: load_celeba_attributes(_celeba(tmp_path)), {}),
    "load_context_folders": (lambda tmp_path: load_context_folders(_context_folders(tmp_path)), {}),
    "load_group_metadata": (
        lambda tmp_path: load_group_metadata(_waterbirds(tmp_path), layout="waterbirds"),
        {},
    ),
    "load_image_collection": (
        _image_collection,
        {"domains": "environments", "domain_names": "environment_names"},
    ),
    "load_image_folders": (
        _image_folders,
        {"domains": "environments", "domain_names": "environment_names"},
    ),
}


def test_every_data_set_function_is_checked():
    assert set(DATA_SETS) == set(skicm.datasets.__all__) - NOT_DATA_SETS


@pytest.mark.parametrize("name", sorted(DATA_SETS))
def test_data_sets_follow_the_bunch_convention(name, tmp_path):
    build, aliases = DATA_SETS[name]
    data = build(tmp_path)
    assert {"target", "environments", "environment_names"} <= set(data), sorted(data)
    assert ("data" in data) or ("paths" in data) or ("images" in data), sorted(data)
    n = len(data.target)
    assert n > 0 and np.asarray(data.target).shape == (n,)
    assert np.asarray(data.environments).shape == (n,)
    # environment_names: every environment once, none that has no row.
    names = list(data.environment_names)
    assert len(set(names)) == len(names)
    assert set(names) == set(np.asarray(data.environments).tolist())
    if "data" in data:
        assert data.data.ndim == 2 and data.data.shape[0] == n
    if "paths" in data:
        assert len(data.paths) == n and all(isinstance(p, str) for p in data.paths)
    if "data_intervened" in data:
        assert data.data_intervened.shape == data.data.shape
    if "images" in data and data.images.dtype == object:  # CollectionImage items
        assert data.images.shape == (n,)
        assert all(isinstance(item, CollectionImage) for item in data.images)
    elif "images" in data:
        assert data.images.dtype == np.uint8 and data.images.shape[0] == n
        assert data.images.ndim == 4 and data.images.shape[3] == 3
    if "images_intervened" in data:
        assert data.images_intervened.shape == data.images.shape
    if "target_names" in data:
        assert set(np.unique(data.target)) <= set(range(len(data.target_names)))
    # Keys of earlier versions are the same arrays under their old names.
    for old, new in aliases.items():
        assert data[old] is data[new], (old, new)
