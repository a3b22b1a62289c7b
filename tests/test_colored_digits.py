import numpy as np
import pytest
from sklearn.datasets import load_digits

from skicm.datasets import make_colored_digits


@pytest.fixture(scope="module")
def data():
    return make_colored_digits(random_state=0)


def test_shapes_and_ranges(data):
    n = len(load_digits().target)
    assert data.X.shape == data.X_swapped.shape == (n, 128)
    assert data.X_gray.shape == (n, 64)
    assert data.images.shape == data.images_swapped.shape == data.images_gray.shape == (n, 8, 8, 3)
    assert data.images.dtype == np.uint8
    assert data.X.min() == 0 and data.X.max() == 1
    assert set(np.unique(data.y)) == {0, 1} and set(np.unique(data.color)) == {0, 1}
    assert np.bincount(data.environment).tolist() == [599, 599, 599]
    np.testing.assert_array_equal(data.color_agreement, [0.9, 0.8, 0.1])


def test_images_are_the_real_digits(data):
    digits = load_digits()
    # Every grayscale image is one of scikit-learn's digits, with its own digit label.
    lookup = {img.tobytes(): t for img, t in zip(digits.data / 16.0, digits.target)}
    assert all(lookup[g.tobytes()] == d for g, d in zip(data.X_gray, data.digit))


def test_colour_swap_changes_only_the_colour(data):
    red, green = data.X[:, :64], data.X[:, 64:]
    np.testing.assert_array_equal(data.X_swapped[:, :64], green)
    np.testing.assert_array_equal(data.X_swapped[:, 64:], red)
    np.testing.assert_array_equal(red + green, data.X_gray)
    # The digit sits in exactly the channel of its colour.
    assert not red[data.color == 1].any() and not green[data.color == 0].any()
    np.testing.assert_array_equal(data.images[..., 0].reshape(-1, 64), np.round(red * 255))
    np.testing.assert_array_equal(
        data.images_swapped[..., 0].reshape(-1, 64), np.round(green * 255)
    )
    assert not data.images[..., 2].any()
    assert (data.images_gray[..., 0] == data.images_gray[..., 2]).all()


@pytest.mark.parametrize("label_noise", [None, 0.1])
def test_noise_and_colours_are_the_draws_of_its_generator(label_noise):
    """The exact mechanism, seeded: label flips where the generator's uniform draws fall below
    label_noise (0.25 by default), colour = label where the next draws fall below the
    environment's agreement. 1,797 digits are too few for a binomial bound to tell 0.25 from
    0.22 (5 sigma = 0.051), so the draws themselves are checked.

    Draw order: one permutation of the digits, then one label-noise draw per digit, then one
    colour draw per digit.
    """
    kwargs = {} if label_noise is None else {"label_noise": label_noise}
    data = make_colored_digits(random_state=5, **kwargs)
    digits = load_digits()
    rng = np.random.RandomState(5)
    order = rng.permutation(len(digits.target))
    n = len(order)
    clean = (digits.target[order] >= 5).astype(np.int64)
    y = np.where(
        rng.random_sample(n) < (0.25 if label_noise is None else label_noise), 1 - clean, clean
    )
    agreement = np.array([0.9, 0.8, 0.1])[np.arange(n) * 3 // n]
    color = np.where(rng.random_sample(n) < agreement, y, 1 - y)
    np.testing.assert_array_equal(data.digit, digits.target[order])
    np.testing.assert_array_equal(data.target, y)
    np.testing.assert_array_equal(data.color, color)


def test_label_noise_and_colour_agreement_follow_the_protocol(data):
    """Rates within 5 binomial sigmas, sqrt(p (1 - p) / n), of the protocol's (a sanity check:
    the exact draws are checked above): label noise over 1,797 digits, colour agreement over
    599 per environment."""
    clean = (data.digit >= 5).astype(int)
    n = len(clean)
    assert abs((data.y != clean).mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)
    for e, agreement in enumerate([0.9, 0.8, 0.1]):
        in_env = data.environment == e
        bound = 5 * np.sqrt(agreement * (1 - agreement) / in_env.sum())
        assert abs((data.color[in_env] == data.y[in_env]).mean() - agreement) < bound


def test_reproducible_and_seed_dependent():
    a, b = make_colored_digits(random_state=3), make_colored_digits(random_state=3)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    c = make_colored_digits(random_state=4)
    assert not np.array_equal(a.y, c.y)


def test_custom_environments_and_threshold():
    data = make_colored_digits((1.0, 0.0), label_noise=0.0, threshold=3, random_state=0)
    assert np.bincount(data.environment).tolist() == [899, 898]
    np.testing.assert_array_equal(data.y, data.digit >= 3)
    first = data.environment == 0
    assert (data.color[first] == data.y[first]).all()
    assert (data.color[~first] != data.y[~first]).all()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"color_agreement": (0.9, 1.5)}, "color_agreement"),
        ({"color_agreement": ()}, "color_agreement"),
        ({"color_agreement": ("a", 0.1)}, "color_agreement"),
        ({"label_noise": -0.1}, "label_noise"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": 2.5}, "threshold"),
    ],
)
def test_invalid_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_colored_digits(**kwargs)
