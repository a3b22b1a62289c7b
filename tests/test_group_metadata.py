"""Readers of the Waterbirds, CelebA and context-folder (MetaShift) layouts, on real files."""

import numpy as np
import pytest
from PIL import Image

from skicm.datasets._group_metadata import (
    load_celeba_attributes,
    load_context_folders,
    load_group_metadata,
    load_waterbirds_metadata,
)


def _image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (value, 255 - value, 7)).save(path)


# ------------------------------------------------------------------------------ Waterbirds
WATERBIRDS_ROWS = [  # (y, split, place)
    (0, 0, 0),
    (0, 0, 1),
    (1, 0, 1),
    (1, 1, 0),
    (0, 1, 1),
    (1, 2, 1),
    (0, 2, 0),
]


def _waterbirds(
    folder, rows=WATERBIRDS_ROWS, header="img_id,img_filename,y,split,place,place_filename"
):
    lines = [header]
    for i, (y, split, place) in enumerate(rows):
        name = f"{i:03d}.Bird_{y}/img_{i}.jpg"
        _image(folder / name, 10 * i)
        lines.append(f"{i + 1},{name},{y},{split},{place},/b/bg_{i}.jpg")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder / "metadata.csv"


def test_waterbirds_metadata(tmp_path):
    metadata = _waterbirds(tmp_path)
    data = load_waterbirds_metadata(metadata)
    y, split, place = (np.array(column) for column in zip(*WATERBIRDS_ROWS))
    np.testing.assert_array_equal(data.target, y)
    np.testing.assert_array_equal(data.place, place)
    np.testing.assert_array_equal(data.groups, 2 * y + place)
    assert data.split.tolist() == [["train", "val", "test"][s] for s in split]
    assert data.environments.tolist() == [["land", "water"][p] for p in place]
    assert data.target_names == ["landbird", "waterbird"]
    assert data.environment_names == ["land", "water"]
    assert [data.group_names[g] for g in data.groups[:3]] == [
        "y=landbird, place=land",
        "y=landbird, place=water",
        "y=waterbird, place=water",
    ]
    assert data.paths[2] == str(tmp_path / "002.Bird_1" / "img_2.jpg")
    assert all(np.asarray(Image.open(p)).shape == (6, 6, 3) for p in data.paths)


def test_waterbirds_root_and_names(tmp_path):
    images = tmp_path / "images"
    metadata = _waterbirds(images)
    moved = tmp_path / "meta" / "metadata.csv"
    moved.parent.mkdir()
    moved.write_text(metadata.read_text())
    data = load_waterbirds_metadata(moved, root=images, target_names=["a", "b"])
    assert data.paths[0].startswith(str(images))
    assert data.target_names == ["a", "b"]
    with pytest.raises(FileNotFoundError, match=r"lists 7 image file\(s\) that do not exist"):
        load_waterbirds_metadata(moved)  # relative to the metadata's folder: no images there
    with pytest.raises(ValueError, match="target_names must give 2 distinct names"):
        load_waterbirds_metadata(moved, root=images, target_names=["a", "a"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace(",split,", ",fold,"), r"has no column 'split'"),
        (lambda text: text.replace("\n4,003.Bird_1/img_3.jpg,1,", "\n4,003.Bird_1/img_3.jpg,x,"),
         r"line 5, column 'y': expected an integer, got 'x'"),
        (lambda text: text.replace("/img_5.jpg,1,2,", "/img_5.jpg,1,3,"),
         r"line 7, column 'split': expected one of \[0, 1, 2\], got '3'"),
        (lambda text: text.replace("/img_0.jpg,0,0,0", "/img_0.jpg,0,0,3"),
         r"column 'place': the values must be 0 .. k - 1"),
    ],
)  # fmt: skip
def test_waterbirds_errors_name_file_line_and_column(tmp_path, edit, message):
    metadata = _waterbirds(tmp_path)
    metadata.write_text(edit(metadata.read_text()))
    with pytest.raises(ValueError, match=message) as error:
        load_waterbirds_metadata(metadata)
    assert str(metadata) in str(error.value)


def test_waterbirds_missing_image_is_named(tmp_path):
    metadata = _waterbirds(tmp_path)
    (tmp_path / "004.Bird_0" / "img_4.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\).*img_4.jpg"):
        load_waterbirds_metadata(metadata)


# ------------------------------------------------------------------------------ CelebA
CELEBA = {  # name: (Blond_Hair, Male, Smiling), split
    "000001.jpg": ((1, -1, 1), 0),
    "000002.jpg": ((-1, 1, 1), 0),
    "000003.jpg": ((1, 1, -1), 1),
    "000004.jpg": ((-1, -1, -1), 2),
    "000005.jpg": ((-1, 1, 1), 2),
}


def _celeba(root, *, csv=False):
    for name in CELEBA:
        _image(root / "img_align_celeba" / name)
    if csv:
        attributes = ["image_id,Blond_Hair,Male,Smiling"]
        attributes += [f"{n},{','.join(map(str, v))}" for n, (v, _) in CELEBA.items()]
        partition = ["image_id,partition"] + [f"{n},{s}" for n, (_, s) in CELEBA.items()]
        suffix = ".csv"
    else:  # the official files: a count, the names, then space-aligned rows
        attributes = [str(len(CELEBA)), "Blond_Hair Male Smiling "]
        attributes += [f"{n}  {'  '.join(f'{x:2d}' for x in v)}" for n, (v, _) in CELEBA.items()]
        partition = [f"{n} {s}" for n, (_, s) in CELEBA.items()]
        suffix = ".txt"
    (root / f"list_attr_celeba{suffix}").write_text("\n".join(attributes) + "\n")
    (root / f"list_eval_partition{suffix}").write_text("\n".join(partition) + "\n")
    return root / f"list_attr_celeba{suffix}"


@pytest.mark.parametrize("csv", [False, True])
def test_celeba_attributes(tmp_path, csv):
    attributes = _celeba(tmp_path, csv=csv)
    partition = tmp_path / f"list_eval_partition{'.csv' if csv else '.txt'}"
    data = load_celeba_attributes(attributes, partition=partition)
    values = np.array([v for v, _ in CELEBA.values()])
    np.testing.assert_array_equal(data.target, values[:, 0] == 1)
    np.testing.assert_array_equal(data.place, values[:, 1] == 1)
    assert data.split.tolist() == ["train", "train", "val", "test", "test"]
    assert data.target_names == ["not Blond_Hair", "Blond_Hair"]
    assert data.place_names == ["not Male", "Male"]
    assert data.paths[0] == str(tmp_path / "img_align_celeba" / "000001.jpg")
    other = load_celeba_attributes(
        attributes, partition=partition, target_attribute="Smiling", spurious_attribute="Male"
    )
    np.testing.assert_array_equal(other.target, values[:, 2] == 1)


def test_celeba_errors(tmp_path):
    attributes = _celeba(tmp_path)
    with pytest.raises(ValueError, match=r"target_attribute='Blond'.*\['Blond_Hair', 'Male'"):
        load_celeba_attributes(attributes, target_attribute="Blond")
    with pytest.raises(ValueError, match="must differ"):
        load_celeba_attributes(attributes, spurious_attribute="Blond_Hair")
    text = attributes.read_text()
    attributes.write_text(text.replace("000003.jpg   1   1", "000003.jpg   1   0"))
    with pytest.raises(ValueError, match=r"line 5, column 'Male': expected one of \[-1, 1\]"):
        load_celeba_attributes(attributes)
    attributes.write_text(text)
    partition = tmp_path / "list_eval_partition.txt"
    partition.write_text("\n".join(partition.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"1 image\(s\) .* have no split .*000005.jpg"):
        load_celeba_attributes(attributes)
    with pytest.raises(FileNotFoundError, match="partition file"):
        load_celeba_attributes(attributes, partition=tmp_path / "nope.txt")


# ------------------------------------------------------------------------------ folders
def _folders(root, counts):
    for (cls, context), n in counts.items():
        for i in range(n):
            _image(root / cls / context / f"{i}.png", i)


def test_context_folders_stratified_split(tmp_path):
    counts = {("cat", "sofa"): 10, ("cat", "grass"): 5, ("dog", "grass"): 20, ("dog", "bench"): 6}
    _folders(tmp_path, counts)
    data = load_context_folders(tmp_path, split_sizes=(0.6, 0.2, 0.2), random_state=3)
    assert data.target_names == ["cat", "dog"]
    assert data.place_names == ["bench", "grass", "sofa"]
    for (cls, context), n in counts.items():
        rows = (data.target == data.target_names.index(cls)) & (
            data.place == data.place_names.index(context)
        )
        n_val, n_test = round(0.2 * n), round(0.2 * n)
        got = [int((rows & (data.split == s)).sum()) for s in ("train", "val", "test")]
        assert got == [n - n_val - n_test, n_val, n_test]  # every group in every split
    assert len(set(data.paths)) == sum(counts.values())
    again = load_context_folders(tmp_path, random_state=3)
    other = load_context_folders(tmp_path, random_state=4)
    assert again.paths == data.paths
    assert other.paths != data.paths  # the seed draws the split
    assert set(other.paths) == set(data.paths)


def test_context_folders_with_split_folders(tmp_path):
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        _folders(tmp_path / split, {("cat", "sofa"): n, ("dog", "grass"): n})
    data = load_context_folders(tmp_path)
    assert [int((data.split == s).sum()) for s in ("train", "val", "test")] == [6, 4, 2]
    assert all(f"/{s}/" in p for s, p in zip(data.split, data.paths))
    (tmp_path / "test" / "dog" / "grass" / "0.png").unlink()
    (tmp_path / "test" / "dog" / "grass").rmdir()
    (tmp_path / "test" / "dog").rmdir()
    with pytest.raises(ValueError, match=r"split folder .*test has no class \['dog'\]"):
        load_context_folders(tmp_path)


def test_context_folders_errors_name_the_folder(tmp_path):
    _folders(tmp_path, {("cat", "sofa"): 5, ("dog", "grass"): 2})
    with pytest.raises(ValueError, match=r"dog/grass holds 2 image\(s\): too few"):
        load_context_folders(tmp_path)
    (tmp_path / "dog" / "bench").mkdir()
    (tmp_path / "dog" / "bench" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"context folder .*dog/bench holds no image"):
        load_context_folders(tmp_path)
    (tmp_path / "bird").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*bird has no context folders"):
        load_context_folders(tmp_path)


def test_load_group_metadata_dispatches(tmp_path):
    metadata = _waterbirds(tmp_path / "w")
    assert load_group_metadata(metadata).paths == load_waterbirds_metadata(metadata).paths
    attributes = _celeba(tmp_path / "c")
    celeba = load_group_metadata(attributes, layout="celeba", spurious_attribute="Smiling")
    assert celeba.place_names == ["not Smiling", "Smiling"]
    with pytest.raises(ValueError, match="layout must be one of"):
        load_group_metadata(metadata, layout="wilds")
