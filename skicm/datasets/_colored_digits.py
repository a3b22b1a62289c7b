"""Colored digits: the Colored MNIST protocol of IRM on scikit-learn's bundled digits.

Arjovsky et al. (2019, "Invariant Risk Minimization", section 5.1) build a binary task whose
shape signal is invariant but noisy (25% label noise, so at most 75% accuracy) and whose colour
signal is spurious: colour agrees with the label 90% and 80% of the time in the two training
environments and only 10% of the time in the test environment. A classifier that uses colour
scores well in training and far below chance at test time. Here the same protocol runs on the
1,797 real 8x8 digits that ship with scikit-learn, so it needs no download.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch, check_random_state

__all__ = ["make_colored_digits"]

_CHANNEL_NAMES = ("red", "green")


def _check_probability(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")
    return float(value)


def _colorize(gray, channel):
    """Put each gray 8x8 image into one colour channel of a 2-channel image."""
    colored = np.zeros((len(gray), 2, *gray.shape[1:]), dtype=gray.dtype)
    colored[np.arange(len(gray)), channel] = gray
    return colored


def _to_rgb_uint8(two_channel):
    """Render (n, 2, h, w) images in [0, 1] as (n, h, w, 3) uint8 RGB (blue stays dark)."""
    rgb = np.zeros((*two_channel.shape[:1], *two_channel.shape[2:], 3), dtype=np.uint8)
    rgb[..., :2] = np.round(np.moveaxis(two_channel, 1, -1) * 255).astype(np.uint8)
    return rgb


def make_colored_digits(
    color_agreement=(0.9, 0.8, 0.1), *, label_noise=0.25, threshold=5, random_state=None
):
    """Build the Colored MNIST environments of IRM from scikit-learn's 8x8 digits.

    The 1,797 digits of :func:`sklearn.datasets.load_digits` are shuffled and split into as many
    equal environments as ``color_agreement`` has entries. In each, the label is
    ``digit >= threshold``, flipped with probability ``label_noise``; the colour (red or green)
    equals the noisy label with the environment's ``color_agreement`` probability. A coloured
    image has two channels: the digit's pixels in the channel of its colour, zeros in the other.

    Alongside each image come its colour-swapped counterpart (same digit, same label, other
    colour: an intervention on the variant factor only) and its grayscale version (colour
    removed: the oracle's input).

    Parameters
    ----------
    color_agreement : sequence of float, default=(0.9, 0.8, 0.1)
        Probability, per environment, that the colour agrees with the (noisy) label. The default
        is IRM's: two training environments (0.9, 0.8) and a test environment (0.1).
    label_noise : float, default=0.25
        Probability of flipping the label. The shape then predicts the label at best
        ``1 - label_noise`` of the time.
    threshold : int, default=5
        Digits ``>= threshold`` get label 1, the others label 0.
    random_state : int, RandomState instance or None, default=None
        Controls the shuffle, the label noise and the colours.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the keys of every skicm data set (see
        :mod:`skicm.datasets`), for ``n = 1797`` samples:

        data : ndarray of shape (n, 128)
            Coloured images flattened: the 64 red pixels, then the 64 green pixels, in [0, 1].
        data_intervened : ndarray of shape (n, 128)
            The colour-swapped counterparts, row-aligned with ``data``.
        data_gray : ndarray of shape (n, 64)
            The grayscale images, in [0, 1].
        target : ndarray of shape (n,)
            Noisy binary labels.
        environments : ndarray of shape (n,)
            Environment index into ``color_agreement``.
        environment_names : list of int
            The environments, ``[0, 1, ..., n_environments - 1]``.
        images, images_intervened, images_gray : ndarray of shape (n, 8, 8, 3), dtype uint8
            The same three views as RGB images (red, green or gray digits on black), ready for an
            image embedder such as :class:`skicm.CLIPEmbedder`.
        color : ndarray of shape (n,)
            0 for red, 1 for green.
        digit : ndarray of shape (n,)
            The original digit 0-9.
        color_agreement : ndarray of shape (n_environments,)
            The colour agreement of each environment.
        X, X_swapped, X_gray, y, environment, images_swapped
            The earlier names of ``data``, ``data_intervened``, ``data_gray``, ``target``,
            ``environments`` and ``images_intervened``: the same arrays.
        DESCR : str
            Description of the protocol.

    See Also
    --------
    sklearn.datasets.load_digits : The digits used here.

    References
    ----------
    .. [1] M. Arjovsky, L. Bottou, I. Gulrajani and D. Lopez-Paz, "Invariant Risk Minimization",
       arXiv:1907.02893, 2019.

    Examples
    --------
    >>> from skicm.datasets import make_colored_digits
    >>> data = make_colored_digits(random_state=0)
    >>> data.X.shape, data.X_swapped.shape, data.X_gray.shape
    ((1797, 128), (1797, 128), (1797, 64))
    >>> for e in range(3):
    ...     in_env = data.environment == e
    ...     agree = (data.color[in_env] == data.y[in_env]).mean()
    ...     print(e, data.color_agreement[e], round(agree, 1))
    0 0.9 0.9
    1 0.8 0.8
    2 0.1 0.1
    """
    agreement = np.atleast_1d(np.asarray(color_agreement, dtype=object))
    if agreement.ndim != 1 or len(agreement) == 0:
        raise ValueError(
            "color_agreement must be a non-empty sequence of probabilities, got "
            f"{color_agreement!r}."
        )
    agreement = np.array(
        [_check_probability(p, "each color_agreement entry") for p in agreement], dtype=float
    )
    label_noise = _check_probability(label_noise, "label_noise")
    if not isinstance(threshold, numbers.Integral) or not 1 <= threshold <= 9:
        raise ValueError(f"threshold must be an integer in [1, 9], got {threshold!r}.")
    rng = check_random_state(random_state)

    digits = load_digits()
    n = len(digits.target)
    order = rng.permutation(n)
    gray = digits.images[order] / 16.0
    digit = digits.target[order]
    environment = np.arange(n) * len(agreement) // n

    y = (digit >= threshold).astype(np.int64)
    y = np.where(rng.random_sample(n) < label_noise, 1 - y, y)
    color = np.where(rng.random_sample(n) < agreement[environment], y, 1 - y)

    colored = _colorize(gray, color)
    swapped = _colorize(gray, 1 - color)
    gray_rgb = np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
    X, X_swapped, X_gray = colored.reshape(n, -1), swapped.reshape(n, -1), gray.reshape(n, -1)
    images_swapped = _to_rgb_uint8(swapped)
    return Bunch(
        data=X,
        data_intervened=X_swapped,
        data_gray=X_gray,
        target=y,
        environments=environment,
        environment_names=list(range(len(agreement))),
        images=_to_rgb_uint8(colored),
        images_intervened=images_swapped,
        images_gray=gray_rgb,
        color=color,
        digit=digit,
        color_agreement=agreement,
        # The earlier names, kept as aliases of the same arrays.
        X=X,
        X_swapped=X_swapped,
        X_gray=X_gray,
        y=y,
        environment=environment,
        images_swapped=images_swapped,
        DESCR=(
            "Colored MNIST protocol (Arjovsky et al., 2019) on scikit-learn's 8x8 digits: label "
            f"digit >= {threshold} flipped with probability {label_noise}; colour agrees with the "
            f"label with probability {tuple(agreement.tolist())} in environments "
            f"{tuple(range(len(agreement)))}."
        ),
    )
