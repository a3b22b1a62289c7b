"""make_spurious_digits: Waterbirds' group structure on real MNIST digits, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from skicm.datasets import load_mnist
from skicm.datasets._spurious_digits import PLACE_COLORS, make_spurious_digits


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist()
    return images[::5], labels[::5]  # 1,000 real digits, 100 per class


@pytest.fixture(scope="module")
def data(digits):
    return make_spurious_digits(*digits, random_state=0)


def test_splits_and_group_counts_are_exact(data):
    n = len(data.target)
    assert n == 1000
    assert [int(np.sum(data.split == s)) for s in ("train", "val", "test")] == [600, 200, 200]
    for split, agreement in (("train", 0.95), ("val", 0.5), ("test", 0.5)):
        rows = data.split == split
        for label in (0, 1):
            members = rows & (data.target == label)
            agreeing = int(np.sum(data.place[members] == label))
            assert agreeing == round(agreement * members.sum()), (split, label)
    np.testing.assert_array_equal(data.groups, 2 * data.target + data.place)
    np.testing.assert_array_equal(data.target, (data.digit >= 5).astype(int))
    np.testing.assert_array_equal(data.environments, np.array(["land", "water"])[data.place])
    assert data.group_names[3] == "y=1, place=water"


def test_images_are_the_real_digits_on_their_place_background(digits, data):
    labels = digits[1]
    # Every digit is used once, with its own label.
    assert sorted(data.digit.tolist()) == sorted(labels.tolist())
    assert data.images.shape == (1000, 14, 14, 3) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.data, data.images.reshape(1000, -1) / np.float32(255))
    # A background pixel (the digit's ink is 0 there) has the place's colour, jittered by at
    # most 10%; full ink is white whatever the place.
    corner = data.images[:, 0, 0, :].astype(float)
    colors = np.asarray(PLACE_COLORS, dtype=float)[data.place]
    assert np.all(np.abs(corner / colors - 1) <= 0.1 + 1 / 100)
    assert np.argmax(corner[data.place == 1].mean(0)) == 2  # water is blue
    # The counterpart: the same digit and jitter on the other place, nothing else changed.
    # Each pixel is ink * 255 + (1 - ink) * background; the ink recovered from the red
    # channel of both images agrees to the uint8 rounding (0.5 / (255 - background) < 0.02).
    flipped = data.images_intervened[:, 0, 0, :].astype(float)
    other = np.asarray(PLACE_COLORS, dtype=float)[1 - data.place]
    np.testing.assert_allclose(corner / colors, flipped / other, atol=2 / 40)

    def ink(images, background):
        red = images[..., 0].astype(float)
        return (red - background[:, None, None, 0]) / (255 - background[:, None, None, 0])

    np.testing.assert_allclose(
        ink(data.images, corner), ink(data.images_intervened, flipped), atol=0.02
    )
    assert ink(data.images, corner).max() > 0.9  # the digits are there


def test_reproducible_and_validated(digits):
    a = make_spurious_digits(*digits, random_state=3)
    b = make_spurious_digits(*digits, random_state=3)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.split, b.split)
    assert make_spurious_digits(*digits, subsample=False, random_state=0).data.shape == (
        1000,
        28 * 28 * 3,
    )
    with pytest.raises(ValueError, match=r"agreement must be a number in \[0.5, 1.0\]"):
        make_spurious_digits(*digits, agreement=0.3)
    with pytest.raises(ValueError, match="split_sizes must be 3 positive shares"):
        make_spurious_digits(*digits, split_sizes=(0.5, 0.5))
    with pytest.raises(ValueError, match="images were given without labels"):
        make_spurious_digits(digits[0])
    with pytest.raises(ValueError, match=r"The \w+ split would hold"):
        make_spurious_digits(digits[0][:4], digits[1][:4])
