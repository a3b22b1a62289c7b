"""Image inputs of the embedders: accepted kinds, identity keys, decoding.

:class:`skicm.CLIPEmbedder` and :class:`skicm.ImageEmbedder` accept a sequence of images, each
one a file path (``str`` or :class:`os.PathLike`), a PIL image, a numpy array of shape
``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` with dtype uint8 or uint16 (grayscale,
RGBA and 16-bit images are converted to 8-bit RGB), or a :class:`CollectionImage` (a member of
a WebDataset tar shard or a row of a Hugging Face dataset, decoded as the same bytes in a
file); or one uint8 array of shape ``(N, H, W, C)``. Everything here works without torch:
decoding runs inside :class:`torch.utils.data.DataLoader` worker processes, and
:class:`ImageDecodingDataset` is a plain map-style dataset so that it pickles for any
multiprocessing start method.

Every decoder gives the same picture of a file:

- **EXIF orientation.** Images are turned upright as :func:`PIL.ImageOps.exif_transpose` does
  (the EXIF ``Orientation`` tag, or the XMP one when EXIF has none): a phone photo stored sideways
  with ``Orientation=6`` is embedded upright. This holds for files, for PIL images that carry the
  tag (an image already passed through ``exif_transpose`` has lost it and is not turned twice),
  and for every decoder (Pillow, torchvision's JPEG decoder on the CPU, the JPEG decoder on the
  accelerator). Arrays carry no orientation and are taken as they are.
- **Decompression-bomb limit.** A file whose header declares more than
  ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels is rejected before any pixel is decoded, with an
  error naming the file (:class:`PIL.Image.DecompressionBombError`); above
  ``PIL.Image.MAX_IMAGE_PIXELS`` Pillow warns (:class:`PIL.Image.DecompressionBombWarning`).
  These are Pillow's own rules, applied to every decoder. Raise ``PIL.Image.MAX_IMAGE_PIXELS``
  (``None`` disables the limit) to embed larger images.
- **Reduced-scale JPEG decoding** (``decode="reduced"``, the embedders' default). A JPEG file
  larger than the preprocessing needs is decoded by libjpeg's DCT scaling (Pillow's
  :meth:`PIL.Image.Image.draft`) at 1/2, 1/4 or 1/8 of its size: the largest reduction after
  which the decoded picture is still ``OVERSAMPLING`` (3) times as large as what the
  preprocessing's first resize makes of it (:class:`DecodeTarget`: for CLIP's ``Resize(224)`` +
  ``CenterCrop(224)``, a shortest side of at least 672, so that the resize's own filter, not
  the DCT scaling, decides the pixels). The reduction is chosen once per file from its header
  and its upright size (an EXIF rotation by 90 degrees swaps width and height), applied once,
  during the only decode; the EXIF orientation and the decompression-bomb limit (on the
  declared, full size) are applied as for a full decode. Files that cannot be reduced (not
  JPEG, too small, or a preprocessing whose first step is not a known resize) are decoded
  exactly as with ``decode="full"``, pixel for pixel.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CollectionImage",
    "DecodeTarget",
    "ImageDecodingDataset",
    "as_image_list",
    "collate_decoded",
    "decode_image_data",
    "decode_in_batches",
    "describe_image",
    "image_keys",
    "image_keys_and_missing",
    "jpeg_orientation",
    "load_rgb",
    "orient_chw",
]

_JPEG_MAGIC = b"\xff\xd8\xff"
#: Decode modes of :class:`ImageDecodingDataset` and of the embedders' ``decode`` parameter.
DECODE_MODES = ("reduced", "full")
# The DCT scalings of libjpeg that Pillow's draft mode offers, largest reduction first.
_DRAFT_SCALES = (8, 4, 2)
#: How many times larger than the resize's output a reduced decode stays, per side. DCT scaling
#: is a box filter; followed by the resize's own antialiasing filter, it blurs more than that
#: filter alone, and a CNN notices: with EfficientNet-Lite0 (whose features move to cosine 0.995
#: under +-2 grey levels of noise), decoded at 1.5-2x the 224-pixel input the cosine to the
#: full decode's embedding measured 0.989-0.998 on upscaled photos, at 3x and more >= 0.9988
#: (>= 0.9998 for 2048x1536 photos decoded at half size).
OVERSAMPLING = 3.0
_EXIF_ORIENTATION = 0x0112
# Suffix of the store keys of files: their embeddings are those of the upright picture, which
# differ from the raw pixels' embeddings that stores filled by orientation-blind decoders hold
# under the bare file identity.
_FILE_KEY_SUFFIX = "|upright"


def _is_path(item) -> bool:
    return isinstance(item, (str, os.PathLike))


class CollectionImage:
    """An image stored in a collection: a WebDataset tar member or a Hugging Face dataset row.

    The embedders take it beside paths, PIL images and arrays. Its bytes are read only when
    it is decoded (by offset in the tar, by row in the memory-mapped dataset) and decoded
    exactly as the same bytes in a file (EXIF orientation, decompression-bomb limit, the
    reduced decode of large JPEGs, every decoder, including the accelerator's for JPEG). Its
    store key needs no read: a tar member's key is the tar's identity as a file's (real path,
    device, inode, size, modification and change times, taken when the shards were listed)
    and the member's name, so a rewritten tar gets new keys; a dataset row's key is its row
    identifier ``hf:FINGERPRINT/SPLIT/ROW`` (the fingerprint identifies the content) and the
    image column. A tar changed since it was listed, or a dataset saved again with other
    content, is refused when an item must be read, with an error naming the item.

    Items pickle (DataLoader worker processes, Ray tasks): they carry where the image is,
    not its bytes. Get them from :func:`skicm.datasets.load_image_collection`.

    Parameters
    ----------
    reader : object
        Reads the item and names it: ``reader.read_item(location)``, ``item_id``,
        ``item_key`` and ``describe`` of ``location``
        (:class:`skicm.datasets._collection_reader.CollectionReader`).
    location : object
        Where the item is, for ``reader``.

    Attributes
    ----------
    id : str
        The row identifier: ``<tar path>#<sample key>`` or ``hf:FINGERPRINT/SPLIT/ROW``.
    key : str
        The store key (see above).
    description : str
        How errors name the item (the member and shard, or the row and dataset).

    See Also
    --------
    skicm.datasets.load_image_collection : Items of WebDataset shards or a dataset, labelled.

    Examples
    --------
    >>> import io, tarfile, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.datasets import load_image_collection
    >>> folder = Path(tempfile.mkdtemp())
    >>> with tarfile.open(folder / "shard-0.tar", "w") as tar:
    ...     for name, text in [("a", b"cat"), ("b", b"dog")]:
    ...         png = io.BytesIO()
    ...         Image.new("RGB", (5, 4)).save(png, format="PNG")
    ...         for member, data in [(f"{name}.png", png.getvalue()), (f"{name}.cls", text)]:
    ...             info = tarfile.TarInfo(member)
    ...             info.size = len(data)
    ...             tar.addfile(info, io.BytesIO(data))
    >>> item = load_image_collection(folder / "shard-0.tar", label_key="cls").images[0]
    >>> item.id.endswith("shard-0.tar#a"), item.description.startswith("member 'a.png'")
    (True, True)
    >>> load_rgb(item).size
    (5, 4)
    """

    # Only where the item is: a million items take about 250 MB, and the identifier, key and
    # description are made when asked for.
    __slots__ = ("_location", "_reader")

    def __init__(self, reader, location):
        self._reader = reader
        self._location = location

    @property
    def id(self) -> str:
        return self._reader.item_id(self._location)

    @property
    def key(self) -> str:
        return self._reader.item_key(self._location)

    @property
    def description(self) -> str:
        return self._reader.describe(self._location)

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)

    def __repr__(self):
        return f"CollectionImage({self.id!r})"

    def read(self) -> bytes:
        """The encoded image (the member's or the cell's bytes).

        Returns
        -------
        data : bytes

        Raises
        ------
        OSError
            If the shard or dataset cannot be read or has changed since it was listed; the
            message names the shard or dataset (the embedders' errors add the item's
            ``description``).
        """
        return self._reader.read_item(self._location)


def _is_item(item) -> bool:
    return isinstance(item, CollectionImage)


def _is_pil(item) -> bool:
    # Avoid importing PIL just to answer "no".
    return type(item).__module__.startswith("PIL.") and hasattr(item, "mode")


def as_image_list(X, owner: str = "the embedder") -> list:
    """Turn the ``X`` given to ``transform`` into a list with one item per image.

    Accepted: a list, tuple or 1-D array of images; a uint8/uint16 array ``(N, H, W, C)`` or
    ``(N, H, W)``; a one-column table of images (``(n, 1)`` object array, one-column DataFrame, as
    :class:`~sklearn.compose.ColumnTransformer` passes it) or a pandas Series.

    Parameters
    ----------
    X : sequence of images, ndarray, DataFrame or Series
        What ``transform`` was given.
    owner : str, default="the embedder"
        Names the estimator in error messages.

    Returns
    -------
    items : list
        One item (path, PIL image or array) per image, in order; not validated yet (see
        :func:`image_keys`).

    Raises
    ------
    ValueError
        If ``X`` is empty, is a single image rather than a sequence, or is a numeric array whose
        items would not be images (a 1-D or 2-D numeric array).

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.image_loading import as_image_list
    >>> len(as_image_list(np.zeros((5, 8, 8, 3), dtype=np.uint8)))
    5
    >>> as_image_list(["a.jpg", "b.png"])
    ['a.jpg', 'b.png']
    """
    if X is None:
        raise ValueError("X is None; expected a sequence of images (paths, PIL images or arrays).")
    if _is_path(X) or _is_pil(X) or _is_item(X):
        raise ValueError(
            f"X is a single image ({type(X).__name__}); pass a sequence of images, e.g. [X]."
        )
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"A DataFrame given to {owner} must have exactly one column of images; got "
                f"{X.shape[1]} columns {list(X.columns)[:5]}."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "iloc"):  # pandas Series
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray):
        items = _array_to_items(X)
    else:
        try:
            items = list(X)
        except TypeError:
            raise ValueError(f"X must be a sequence of images; got {type(X).__name__}.") from None
    if len(items) == 0:
        raise ValueError(f"X is empty: {owner} needs at least one image.")
    return items


def _array_to_items(X: np.ndarray) -> list:
    if X.dtype.kind in "OUS":
        if X.ndim == 2 and X.shape[1] == 1:
            return list(X[:, 0])
        if X.ndim == 1:
            return list(X)
        raise ValueError(
            f"An array of image references must be 1-D or one column (n, 1); got shape {X.shape}."
        )
    if X.ndim == 4:
        if X.shape[1] in _CHANNEL_COUNTS and X.shape[3] not in _CHANNEL_COUNTS:
            raise ValueError(
                f"An array of shape {X.shape} is not (N, H, W, C) images: its last axis "
                f"({X.shape[3]}) is not 1, 3 or 4 channels. It looks channels-first (N, C, H, W), "
                "as torch tensors are; pass np.moveaxis(X, 1, -1) (or X.transpose(0, 2, 3, 1))."
            )
        return list(X)
    if X.ndim == 3:
        if X.shape[-1] <= 4:
            raise ValueError(
                f"A 3-D array of shape {X.shape} is read as {X.shape[0]} grayscale images of "
                f"{X.shape[1]}x{X.shape[2]} pixels, which looks like a single colour image "
                "instead; pass [image] for one image or an (N, H, W, C) array for several."
            )
        return list(X)
    raise ValueError(
        f"A {X.ndim}-D numeric array of shape {X.shape} is not a sequence of images (each item "
        "would be a scalar or a 1-D row). Pass a list of image paths, PIL images or (H, W[, C]) "
        "uint8 arrays, or an (N, H, W, C) uint8 array."
    )


def describe_image(items: Sequence, index: int) -> str:
    """How error messages name item ``index``: the file path, or ``X[index]``.

    Parameters
    ----------
    items : sequence
        The images, as :func:`as_image_list` returns them.
    index : int
        The item to name.

    Returns
    -------
    name : str

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.image_loading import describe_image
    >>> describe_image(["cat.jpg", np.zeros((4, 4), dtype=np.uint8)], 0)
    "'cat.jpg'"
    >>> describe_image(["cat.jpg", np.zeros((4, 4), dtype=np.uint8)], 1)
    'X[1] (ndarray)'
    """
    item = items[index]
    if _is_path(item):
        return repr(os.fspath(item))
    if _is_item(item):
        return item.description
    return f"X[{index}] ({type(item).__name__})"


_CHANNEL_COUNTS = (1, 3, 4)
_CHANNELS_FIRST_FIX = "np.moveaxis(image, 0, -1) (or image.transpose(1, 2, 0))"


def _array_problem(array: np.ndarray) -> str | None:
    if array.dtype not in (np.uint8, np.uint16):
        return (
            f"dtype {array.dtype} is not an image dtype (uint8 or uint16); convert it, e.g. "
            "(a * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in _CHANNEL_COUNTS):
        if min(array.shape[:2]) < 1:
            return f"shape {array.shape} has no pixels"
        return None
    problem = f"shape {array.shape} is not (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
    if array.ndim == 3 and array.shape[0] in _CHANNEL_COUNTS:
        problem += f"; it looks channels-first (C, H, W): pass {_CHANNELS_FIRST_FIX}"
    return problem


def _looks_channels_first(array: np.ndarray) -> bool:
    """Whether a valid (H, W, C) array is more likely a channels-first (C, H, W) image.

    A (3, 224, 4) array is a legal RGBA image 3 pixels high, and also a 224 x 4 picture stored
    channels-first; an image a few pixels high is rare, so a warning names the second reading.
    """
    return (
        array.ndim == 3
        and array.shape[0] in _CHANNEL_COUNTS
        and array.shape[2] in _CHANNEL_COUNTS
        and array.shape[1] > max(_CHANNEL_COUNTS)
    )


_MAX_LISTED = 20


def _listing(entries: list[str]) -> str:
    """``entries`` joined for an error message: the first 20, then how many more."""
    shown = "; ".join(entries[:_MAX_LISTED])
    if len(entries) > _MAX_LISTED:
        shown += f"; and {len(entries) - _MAX_LISTED} more"
    return shown


def _file_key(path) -> str:
    """Identity of a file: real path, device, inode, size, modification and change times.

    The path is stat'ed as given (the OS resolves ``..`` after following symbolic links, which
    :func:`os.path.abspath` would not) and named by :func:`os.path.realpath`. ``st_ctime_ns``
    changes on every write and on every ``utime`` call, so a file rewritten with its old
    modification time restored (``cp -p``, ``rsync -t``, ``tar -x``) gets a new key, and a file
    replaced by another one (new inode) gets a new key too.

    Raises
    ------
    OSError
        If the path cannot be stat'ed; :class:`IsADirectoryError` if it is not a regular file.
    """
    path = os.fspath(path)
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise IsADirectoryError(0, "not a regular file")
    return (
        f"file:{os.path.realpath(path)}|{info.st_dev}:{info.st_ino}|{info.st_size}"
        f"|{info.st_mtime_ns}|{info.st_ctime_ns}"
    )


def image_keys(items: Sequence) -> list[str]:
    """Identity key of every image: a hash of the pixels, or the identity of the file.

    Arrays are keyed by a hash of their dtype, shape and bytes; PIL images by a hash of the size
    and 8-bit RGB pixels that are encoded, after the EXIF orientation is applied (so that a
    palette image's key covers its palette and an image tagged ``Orientation=6`` has the key of
    its upright picture); files by their real path, device, inode, size, modification and change
    times (see :func:`_file_key`) and a mark that their embedding is the upright picture's. Files
    are not opened. Every problem found is reported at once (at most 20 items listed).

    Parameters
    ----------
    items : sequence
        The images, as :func:`as_image_list` returns them.

    Returns
    -------
    keys : list of str
        One key per item; equal pictures (or the same file) have equal keys.

    Raises
    ------
    FileNotFoundError
        Listing every path that does not exist or is not a regular file, and every other item
        that is not an image.
    ValueError
        Listing every item that is not an image (wrong type, dtype, shape or PIL mode), when
        every file exists.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.image_loading import image_keys
    >>> black = np.zeros((4, 4, 3), dtype=np.uint8)
    >>> first, second, white = image_keys([black, black.copy(), black + 255])
    >>> first == second, first == white
    (True, False)
    """
    keys, missing = image_keys_and_missing(items)
    if missing:
        raise FileNotFoundError(missing_files_message(missing))
    return keys


def missing_files_message(missing: list[tuple[int, str]]) -> str:
    """The message ``"N image file(s) not found: ..."`` of :func:`image_keys_and_missing`'s list."""
    return f"{len(missing)} image file(s) not found: " + _listing([entry for _, entry in missing])


def image_keys_and_missing(items: Sequence) -> tuple[list[str], list[tuple[int, str]]]:
    """Keys of :func:`image_keys`, with the missing files returned instead of raised.

    An encoder uses it to encode every image that exists and report the missing files together
    with the files that cannot be decoded, in one error.

    Parameters
    ----------
    items : sequence
        The images, as :func:`as_image_list` returns them.

    Returns
    -------
    keys : list of str
        The key of every item; ``""`` for a missing file.
    missing : list of (int, str)
        Index and description (path and reason) of every path that does not exist or is not a
        regular file.

    Raises
    ------
    ValueError
        Listing every item that is not an image (wrong type, dtype, shape or PIL mode); as a
        :class:`FileNotFoundError` that also lists the missing files if there are some.

    Warns
    -----
    UserWarning
        For arrays that are valid (H, W, C) images but look channels-first (C, H, W), such as
        (3, 224, 4), naming them and how to transpose them.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.image_loading import image_keys_and_missing
    >>> keys, missing = image_keys_and_missing([np.zeros((4, 4), np.uint8), "no/such.jpg"])
    >>> keys[1], missing[0][0]
    ('', 1)
    """
    keys: list[str] = []
    missing: list[tuple[int, str]] = []
    invalid: list[str] = []
    channels_first: list[str] = []
    for index, item in enumerate(items):
        if _is_path(item):
            try:
                keys.append(_file_key(item) + _FILE_KEY_SUFFIX)
            except OSError as error:
                missing.append((index, f"{os.fspath(item)!r} ({error.strerror or error})"))
                keys.append("")
        elif _is_item(item):
            keys.append(item.key)  # the shard's identity, taken when it was listed: no read
        elif isinstance(item, np.ndarray):
            problem = _array_problem(item)
            if problem is not None:
                invalid.append(f"X[{index}]: array {problem}")
                keys.append("")
                continue
            if _looks_channels_first(item):
                channels_first.append(f"X[{index}] {item.shape}")
            digest = hashlib.blake2b(digest_size=16)
            digest.update(f"{item.dtype.str}{item.shape}".encode())
            digest.update(np.ascontiguousarray(item).data)
            keys.append(f"px:{digest.hexdigest()}")
        elif _is_pil(item):
            try:
                rgb = _rgb_from_pil(_upright(item))
            except ValueError as error:
                invalid.append(f"X[{index}]: {error}")
                keys.append("")
                continue
            digest = hashlib.blake2b(digest_size=16)
            digest.update(f"pilrgb{rgb.size}".encode())
            digest.update(rgb.tobytes())
            keys.append(f"pil:{digest.hexdigest()}")
        else:
            invalid.append(
                f"X[{index}]: {type(item).__name__} is not an image (expected a path, a PIL image, "
                "a uint8 array or a CollectionImage)"
            )
            keys.append("")
    if invalid:
        message = f"{len(invalid)} item(s) of X are not images: " + _listing(invalid)
        if missing:
            raise FileNotFoundError(missing_files_message(missing) + ". Also, " + message)
        raise ValueError(message)
    if channels_first:
        warnings.warn(
            f"{len(channels_first)} array(s) of X look channels-first (C, H, W) but are read as "
            f"(H, W, C) images a few pixels high: {_listing(channels_first)}. If they are "
            f"channels-first, pass {_CHANNELS_FIRST_FIX} for each.",
            UserWarning,
            stacklevel=3,
        )
    return keys, missing


def _rgb_from_array(array: np.ndarray):
    from PIL import Image

    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    array = np.ascontiguousarray(array)
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.shape[2] == 4:
        return Image.fromarray(array, mode="RGBA").convert("RGB")
    return Image.fromarray(array, mode="RGB")


def _rgb_from_pil(image):
    """8-bit RGB version of a PIL image; integer modes are read as 16-bit, float is rejected.

    The scaling depends on the mode only, never on the pixel values: ``I;16*`` images (and mode
    ``I`` images, which is how Pillow may decode 16-bit files) are scaled by ``>> 8`` exactly as
    uint16 arrays are, so that every input kind of one picture gives the same pixels.

    Raises
    ------
    ValueError
        For mode ``F`` (floating point) images and mode ``I`` images with values outside
        ``[0, 65535]``: there is no unambiguous way to map them to 8 bits.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "F":
        raise ValueError(
            "PIL image of mode 'F' (32-bit floating point) is not an 8- or 16-bit image; convert "
            "it, e.g. Image.fromarray((np.asarray(im) * 255).round().clip(0, 255)"
            ".astype(np.uint8)) for values in [0, 1]"
        )
    if mode.startswith("I"):
        # Pillow's own conversion clips at 255 instead of rescaling, which would turn most
        # 16-bit images white.
        values = np.asarray(image)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                "PIL image of mode 'I' (32-bit integer) has values outside the 16-bit range "
                f"[0, 65535] (min {values.min()}, max {values.max()}); convert it to uint8 or "
                "uint16 first"
            )
        return _rgb_from_array(values.astype(np.uint16))
    return image.convert("RGB")


def _orientation(image) -> int:
    """EXIF orientation (1 to 8) of a PIL image, as :func:`PIL.ImageOps.exif_transpose` reads it."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block does not stop decoding: the pixels as stored
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def _upright(image):
    """``image`` turned upright per its EXIF orientation; the image itself when already upright."""
    if _orientation(image) == 1:
        return image
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


def _open_image(path, name=None):
    """``Image.open(path)`` whose decompression-bomb error names the file (or ``name``)."""
    from PIL import Image

    try:
        return Image.open(path)
    except Image.DecompressionBombError as error:
        raise Image.DecompressionBombError(
            _bomb_message(path if name is None else name, error)
        ) from None


def _bomb_message(path, error) -> str:
    return (
        f"image file {os.fspath(path)!r}: {error} Nothing was decoded. To embed it anyway, raise "
        "PIL.Image.MAX_IMAGE_PIXELS (None disables the limit)."
    )


class DecodeTarget:
    """The smallest picture a preprocessing needs: how far a large JPEG may be reduced.

    It describes the first resize of an eval preprocessing, which alone decides how many pixels
    the model's input is made of: a picture decoded at least at the size this resize produces
    loses nothing it would keep. :meth:`from_transform` reads it from a transform;
    :meth:`scale` gives the DCT reduction (1, 2, 4 or 8) that a JPEG file of a given size and
    EXIF orientation allows.

    Parameters
    ----------
    kind : {"shortest", "exact", "keep_ratio"}
        ``"shortest"``: the shortest side is resized to ``size`` (torchvision's ``Resize(int)``,
        what CLIP's ``Resize`` + ``CenterCrop`` and timm's eval transforms do), the longest side
        capped at ``max_size``; ``"exact"``: resized to ``size = (height, width)``, the aspect
        ratio ignored (``Resize((h, w))``, open_clip's ``resize_mode="squash"``);
        ``"keep_ratio"``: open_clip's and timm's ``ResizeKeepRatio(size, longest)``.
    size : int or tuple of int
        The resize's ``size``; ``(height, width)`` for ``"exact"`` and ``"keep_ratio"``.
    max_size : int, optional
        The ``max_size`` of ``Resize``.
    longest : float, default=0.0
        The ``longest`` of ``ResizeKeepRatio`` (0: fit the shortest side, 1: the longest).
    oversampling : float, default=OVERSAMPLING
        How many times larger than the resize's output, along each side, the reduced picture
        must stay (1: just large enough).

    Examples
    --------
    >>> from torchvision import transforms
    >>> from skicm.image_loading import DecodeTarget
    >>> clip = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224)])
    >>> target = DecodeTarget.from_transform(clip)
    >>> target
    DecodeTarget('shortest', 224)
    >>> target.scale(2048, 1536)  # decoded at 1024 x 768: its shortest side is >= 3 * 224
    2
    >>> target.scale(4032, 3024)  # a 12-megapixel photo: decoded at 1008 x 756
    4
    >>> target.scale(1280, 960)  # too small to be reduced
    1
    """

    def __init__(
        self,
        kind: str,
        size,
        max_size: int | None = None,
        longest: float = 0.0,
        oversampling: float = OVERSAMPLING,
    ):
        if kind not in ("shortest", "exact", "keep_ratio"):
            raise ValueError(f"kind must be 'shortest', 'exact' or 'keep_ratio'; got {kind!r}.")
        if not oversampling >= 1:
            raise ValueError(f"oversampling must be >= 1; got {oversampling!r}.")
        self.kind = kind
        self.size = size
        self.max_size = max_size
        self.longest = float(longest)
        self.oversampling = float(oversampling)

    def __repr__(self):
        extra = f", max_size={self.max_size}" if self.max_size is not None else ""
        extra += f", longest={self.longest}" if self.kind == "keep_ratio" else ""
        extra += f", oversampling={self.oversampling}" if self.oversampling != OVERSAMPLING else ""
        return f"DecodeTarget({self.kind!r}, {self.size!r}{extra})"

    @classmethod
    def from_transform(cls, transform) -> DecodeTarget | None:
        """The target of ``transform``'s first resize; None when a reduced decode is not safe.

        Conversions to RGB before the resize are skipped. Any other first step (a crop, a pad,
        a random transform, an unknown callable) or a resize this class does not describe gives
        None: such images are decoded in full.

        Parameters
        ----------
        transform : callable
            A torchvision ``Compose`` (or a single transform) that takes a PIL image.

        Returns
        -------
        target : DecodeTarget or None
        """
        for step in getattr(transform, "transforms", [transform]):
            if _is_rgb_conversion(step):
                continue
            return cls._from_resize(step)
        return None

    @classmethod
    def _from_resize(cls, step) -> DecodeTarget | None:
        from torchvision import transforms
        from torchvision.transforms import v2

        if isinstance(step, (transforms.Resize, v2.Resize)) and step.size is not None:
            size = step.size
            if isinstance(size, int) or len(size) == 1:
                side = int(size) if isinstance(size, int) else int(size[0])
                return cls("shortest", side, max_size=step.max_size)
            if len(size) == 2:
                return cls("exact", (int(size[0]), int(size[1])))
            return None
        if (
            type(step).__name__ == "ResizeKeepRatio"
            and not getattr(step, "random_scale_prob", 0)
            and not getattr(step, "random_aspect_prob", 0)
            and len(getattr(step, "size", ())) == 2
        ):
            height, width = step.size
            return cls("keep_ratio", (int(height), int(width)), longest=step.longest)
        return None

    def needed(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` that the resize makes of an upright picture of this size.

        Parameters
        ----------
        height, width : int
            The upright picture's size.

        Returns
        -------
        size : tuple of int
            ``(height, width)`` after the resize.
        """
        if self.kind == "exact":
            return self.size
        if self.kind == "keep_ratio":
            ratio_h, ratio_w = height / self.size[0], width / self.size[1]
            ratio = max(ratio_h, ratio_w) * self.longest + min(ratio_h, ratio_w) * (
                1.0 - self.longest
            )
            return round(height / ratio), round(width / ratio)
        # torchvision's rule for Resize(int, max_size)
        short, long = min(height, width), max(height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        if self.max_size is not None and new_long > self.max_size:
            new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def scale(self, width: int, height: int, orientation: int = 1) -> int:
        """The largest DCT reduction (8, 4, 2, else 1) that keeps the picture large enough.

        Large enough: ``oversampling`` times what the resize makes of the picture, per side.

        Parameters
        ----------
        width, height : int
            The size stored in the file's header (before the EXIF orientation is applied).
        orientation : int, default=1
            The EXIF orientation; 5 to 8 turn the picture by 90 degrees, swapping its sides.

        Returns
        -------
        scale : int
            1 (decode in full), 2, 4 or 8: the picture decoded at ``1/scale`` of its size is at
            least ``oversampling`` times as large, along each side, as what the resize makes
            of it.
        """
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        out_h, out_w = self.needed(height, width)
        need_h = self.oversampling * max(out_h, 1)
        need_w = self.oversampling * max(out_w, 1)
        for scale in _DRAFT_SCALES:
            # Pillow's draft asks for (width // scale, height // scale); libjpeg's output size
            # is the ceiling, so the floor is the size guaranteed.
            if height // scale >= need_h and width // scale >= need_w:
                return scale
        return 1


def _is_rgb_conversion(step) -> bool:
    return (
        type(step).__name__ in ("MaybeConvertMode",)
        or getattr(step, "__name__", "") == "_convert_to_rgb"
    )


def _draft(image, target: DecodeTarget | None) -> int:
    """Set up the reduced decode of an opened, not yet loaded, JPEG image; returns the scale.

    Pillow's :meth:`~PIL.Image.Image.draft` asks libjpeg to decode at ``1/scale``; nothing is
    done (scale 1) unless ``target`` allows a reduction, so small images decode as before.
    """
    if target is None or image.format != "JPEG":
        return 1
    scale = target.scale(image.width, image.height, _orientation(image))
    if scale == 1:
        return 1
    if image.draft("RGB", (image.width // scale, image.height // scale)) is None:
        return 1  # Pillow declined (e.g. a draft already set): decoded in full
    return scale


def load_rgb(item, target: DecodeTarget | None = None):
    """Decode one image (path, PIL image or array) to an upright 8-bit RGB PIL image.

    The EXIF orientation of files and PIL images is applied (see the module documentation).

    Parameters
    ----------
    item : str, os.PathLike, PIL image or ndarray
        The image.
    target : DecodeTarget, optional
        When given, a large JPEG file is decoded at the reduced scale that ``target`` allows
        (see :class:`DecodeTarget`); PIL images and arrays are taken as they are.

    Returns
    -------
    image : PIL.Image.Image
        Mode ``RGB``, upright.

    Raises
    ------
    OSError
        If a file cannot be read or decoded (missing, truncated, not an image).
    PIL.Image.DecompressionBombError
        If a file declares more than ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels; the message names
        the file.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.image_loading import load_rgb
    >>> gray16 = np.full((2, 3), 65535, dtype=np.uint16)
    >>> image = load_rgb(gray16)
    >>> image.mode, image.size, image.getpixel((0, 0))
    ('RGB', (3, 2), (255, 255, 255))
    """
    if _is_path(item):
        return _load_rgb_file(item, item, target)
    if _is_item(item):
        return _load_rgb_file(io.BytesIO(item.read()), item.description, target)
    if isinstance(item, np.ndarray):
        return _rgb_from_array(item)
    return _rgb_from_pil(_upright(item))


def _load_rgb_file(source, name, target):
    """Decode a file (a path or a binary file object) with Pillow; errors name ``name``."""
    with _open_image(source, name) as image:
        _draft(image, target)
        image.load()
        return _rgb_from_pil(_upright(image))


def decode_image_data(
    data: bytes | bytearray, name: str, target: DecodeTarget | None = None, decoder: str = "tensor"
) -> np.ndarray:
    """Decode an encoded image (the bytes of a file) exactly as the embedders decode the file.

    For images that come as bytes rather than files (tar members, dataset cells): upright,
    within the decompression-bomb limit, and, with ``target``, a large JPEG decoded at the
    reduced scale, so that the pixels equal those of the same bytes in a file.

    Parameters
    ----------
    data : bytes or bytearray
        The encoded image.
    name : str
        Names the image in error messages.
    target : DecodeTarget, optional
        Decode a large JPEG at the scale it allows (the embedders' ``decode="reduced"``; see
        :meth:`skicm.ImageEmbedder.decode_target`); None decodes in full.
    decoder : {"tensor", "pil"}, default="tensor"
        ``"tensor"``: JPEG by torchvision's ``decode_jpeg`` unless reduced (the embedders'
        ``decoder="torchvision"``); ``"pil"``: everything by Pillow (``decoder="pil"``).

    Returns
    -------
    rgb : ndarray of shape (H, W, 3), dtype uint8

    Raises
    ------
    OSError
        If the bytes are not a decodable image.
    PIL.Image.DecompressionBombError
        If the header declares more than ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> from skicm.image_loading import DecodeTarget, decode_image_data
    >>> file = io.BytesIO()
    >>> Image.new("RGB", (2048, 1536), "teal").save(file, format="JPEG")
    >>> decode_image_data(file.getvalue(), "teal.jpg").shape
    (1536, 2048, 3)
    >>> decode_image_data(file.getvalue(), "teal.jpg", DecodeTarget("shortest", 224)).shape
    (768, 1024, 3)
    """
    if decoder == "pil":
        rgb = np.asarray(_load_rgb_file(io.BytesIO(data), name, target))
        return rgb if rgb.flags.writeable else rgb.copy()
    return _rgb_chw(name, target, data, from_bytes=True).permute(1, 2, 0).contiguous().numpy()


def jpeg_orientation(data: bytes | bytearray | memoryview, path=None) -> int:
    """Check a JPEG file's header and return its EXIF orientation, decoding no pixel.

    The header is parsed by Pillow (EXIF ``Orientation``, else the XMP one), and Pillow's
    decompression-bomb rule is applied to the declared size, so that a decoder other than Pillow
    (torchvision's ``decode_jpeg``, on the CPU or the accelerator) gets the same limit and the same
    orientation as :func:`load_rgb`. Apply the result to the decoded tensor with
    :func:`orient_chw`.

    Parameters
    ----------
    data : bytes-like
        The JPEG file's bytes.
    path : str or os.PathLike, optional
        Its path, for the error message.

    Returns
    -------
    orientation : int
        1 (upright, nothing to do) to 8.

    Raises
    ------
    PIL.Image.DecompressionBombError
        If the header declares more than ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> from skicm.image_loading import jpeg_orientation
    >>> exif = Image.Exif()
    >>> exif[0x0112] = 6  # stored turned: show it turned 90 degrees clockwise
    >>> file = io.BytesIO()
    >>> Image.new("RGB", (8, 4)).save(file, format="JPEG", exif=exif.tobytes())
    >>> jpeg_orientation(file.getvalue())
    6
    """
    image = _jpeg_header(data, path)
    if image is None:
        return 1  # unreadable header: the decoder reports the damage
    with image:
        return _orientation(image)


def _jpeg_header(data, path=None):
    """JPEG bytes opened by Pillow (header read, no pixel decoded), or None if unreadable.

    Pillow's decompression-bomb rule is applied to the declared size; the error names ``path``.
    """
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise Image.DecompressionBombError(
            _bomb_message("<bytes>" if path is None else path, error)
        ) from None
    except (OSError, SyntaxError, ValueError):
        return None


def orient_chw(chw, orientation: int):
    """Turn a ``(..., H, W)`` tensor upright as :func:`PIL.ImageOps.exif_transpose` would.

    Parameters
    ----------
    chw : torch.Tensor
        Decoded image(s), channels first.
    orientation : int
        EXIF orientation, as :func:`jpeg_orientation` returns it.

    Returns
    -------
    upright : torch.Tensor
        Contiguous; ``chw`` itself for orientation 1.

    Examples
    --------
    >>> import torch
    >>> from skicm.image_loading import orient_chw
    >>> stored = torch.arange(6).reshape(1, 2, 3)
    >>> orient_chw(stored, 6)  # turned 90 degrees clockwise
    tensor([[[3, 0],
             [4, 1],
             [5, 2]]])
    """
    if orientation == 2:  # FLIP_LEFT_RIGHT
        chw = chw.flip(-1)
    elif orientation == 3:  # ROTATE_180
        chw = chw.flip(-2, -1)
    elif orientation == 4:  # FLIP_TOP_BOTTOM
        chw = chw.flip(-2)
    elif orientation == 5:  # TRANSPOSE
        chw = chw.transpose(-2, -1)
    elif orientation == 6:  # ROTATE_270 (90 degrees clockwise)
        chw = chw.transpose(-2, -1).flip(-1)
    elif orientation == 7:  # TRANSVERSE
        chw = chw.transpose(-2, -1).flip(-2, -1)
    elif orientation == 8:  # ROTATE_90 (90 degrees counter-clockwise)
        chw = chw.transpose(-2, -1).flip(-2)
    else:
        return chw
    return chw.contiguous()


def _rgb_chw(item, target: DecodeTarget | None = None, data=None, from_bytes: bool = False):
    """Decode one image to an upright uint8 ``(3, H, W)`` tensor; JPEG files with torchvision.

    JPEG files are decoded by ``torchvision.io.decode_jpeg`` (libjpeg-turbo), straight into the
    channels-first tensor that the resize takes, after Pillow has read the header (orientation,
    decompression-bomb limit); other images go through :func:`load_rgb`. A JPEG file that
    ``target`` allows to reduce is decoded by Pillow instead, at the reduced scale (torchvision's
    decoder has no DCT scaling). ``data``: the file's bytes when already read, or, with
    ``from_bytes``, the bytes of an image that is not a file (``item`` only names it).
    """
    import torch

    if _is_item(item):  # its bytes, decoded as a file's
        data = item.read() if data is None else data
        return _rgb_chw(item.description, target, data, from_bytes=True)
    if data is not None or _is_path(item):
        if data is None:
            with open(item, "rb") as file:
                data = bytearray(os.fstat(file.fileno()).st_size)
                data = data[: file.readinto(data)]
        if data[:3] == _JPEG_MAGIC:
            from torchvision.io import ImageReadMode, decode_jpeg

            header = _jpeg_header(data, item)
            orientation = 1
            if header is not None:
                with header:
                    orientation = _orientation(header)
                    if _draft(header, target) > 1:
                        header.load()
                        return _chw_from_pil(_rgb_from_pil(_upright(header)))
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
                    buffer = data if isinstance(data, bytearray) else bytearray(data)
                    chw = decode_jpeg(
                        torch.frombuffer(buffer, dtype=torch.uint8), mode=ImageReadMode.RGB
                    )
                return orient_chw(chw, orientation)
            except RuntimeError:
                pass  # e.g. CMYK or damaged: Pillow decodes it or says why not
        if from_bytes:
            return _chw_from_pil(_load_rgb_file(io.BytesIO(data), item, target))
    return _chw_from_pil(load_rgb(item, target))


def _chw_from_pil(image):
    import torch

    rgb = np.asarray(image)
    if not rgb.flags.writeable:
        # Arrays from PIL images are read-only and torch warns about them; a filter in
        # warnings.catch_warnings() would not do, as this runs in decoding threads and those
        # filters are process-wide and not thread-safe. The copy costs little beside the decode.
        rgb = rgb.copy()
    return torch.from_numpy(rgb).permute(2, 0, 1)


class TensorPreprocess:
    """The PIL stage of open_clip's preprocessing, replayed on uint8 ``(3, H, W)`` tensors.

    ``Resize`` and ``CenterCrop`` of the factory's transform are applied with the same arguments
    through ``torchvision.transforms.v2.functional``, whose uint8 bicubic/bilinear antialiased
    resize is a SIMD kernel (the v1 transforms convert to float first, several times slower).
    Steps it does not know are applied as they are.
    """

    def __init__(self, pil_transform):
        self.steps = list(getattr(pil_transform, "transforms", [pil_transform]))

    def __call__(self, chw):
        from torchvision.transforms import CenterCrop, Resize
        from torchvision.transforms.v2 import functional as F

        for step in self.steps:
            if isinstance(step, Resize):
                chw = F.resize(
                    chw, step.size, step.interpolation, max_size=step.max_size, antialias=True
                )
            elif isinstance(step, CenterCrop):
                chw = F.center_crop(chw, list(step.size))
            elif _is_rgb_conversion(step):
                continue  # already RGB
            else:
                chw = step(chw)
        return chw


class ImageDecodingDataset:
    """Map-style dataset that decodes and preprocesses images (runs in DataLoader workers).

    ``mode`` chooses the decoder: ``"pil"`` decodes with Pillow and applies ``transform`` (the
    factory's resize and crop) to the PIL image, exactly as open_clip does; ``"tensor"`` decodes
    JPEG files with torchvision and applies ``transform`` to a uint8 tensor (torchvision's SIMD
    resize, about twice as fast on the CPU); ``"raw_jpeg"`` returns JPEG files undecoded, for
    decoding on the accelerator, and treats everything else as ``"tensor"``. Whatever the mode,
    images come out upright and files over the decompression-bomb limit are rejected from their
    header (see the module documentation): ``"raw_jpeg"`` returns only JPEG files that need no
    turning, are within the limit and are not reduced, and decodes the others here.

    ``decode="reduced"`` decodes large JPEG files at the reduced scale that the first resize
    of ``decode_for`` (default: ``transform``) allows (:class:`DecodeTarget`), with Pillow's
    draft mode, in every mode (the accelerator's decoder has no DCT scaling, so with
    ``"raw_jpeg"`` they are decoded here, on the CPU, at a fraction of the full decode's cost);
    ``decode="full"`` decodes every file in full. ``decode_for`` serves callers that resize
    later: ``transform`` may then be an empty ``Compose`` and ``decode_for`` the preprocessing
    applied afterwards, or its :class:`DecodeTarget` (an embedder's ``decode_target()``).

    Item ``i`` is ``(i, pixels, jpeg_bytes, error)`` with exactly one of the last three set:
    ``pixels`` a uint8 ``(3, S, S)`` array, ``jpeg_bytes`` the file as a uint8 array, or ``error``
    the reason the image cannot be read. Errors are returned, not raised, so that one bad file does
    not stop the others and all of them can be reported together.

    Parameters
    ----------
    items : sequence
        The images, as :func:`as_image_list` returns them.
    transform : callable
        The preprocessing up to the uint8 model input (resize, crop), taking a PIL image.
    mode : {"pil", "tensor", "raw_jpeg"}, default="pil"
        The decoder (above).
    decode : {"full", "reduced"}, default="full"
        The scale of JPEG files (above).
    decode_for : callable or DecodeTarget, optional
        What decides the reduction instead of ``transform``.

    Examples
    --------
    >>> import numpy as np
    >>> from torchvision import transforms
    >>> from skicm.image_loading import ImageDecodingDataset
    >>> preprocess = transforms.Compose([transforms.Resize(8), transforms.CenterCrop(8)])
    >>> dataset = ImageDecodingDataset([np.zeros((12, 16, 3), np.uint8)], preprocess)
    >>> index, pixels, jpeg_bytes, error = dataset[0]
    >>> pixels.shape, jpeg_bytes, error
    ((3, 8, 8), None, None)
    """

    def __init__(
        self, items: Sequence, transform, mode: str = "pil", decode: str = "full", decode_for=None
    ):
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}; got {decode!r}.")
        self.items = items
        self.transform = transform
        self.mode = mode
        self.decode = decode
        self.decode_for = decode_for
        self.tensor_transform = TensorPreprocess(transform)
        reference = transform if decode_for is None else decode_for
        if decode != "reduced":
            self.target = None
        elif isinstance(reference, DecodeTarget):
            self.target = reference
        else:
            self.target = DecodeTarget.from_transform(reference)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        try:
            if self.mode == "pil":
                pixels = np.asarray(self.transform(load_rgb(item, self.target)), dtype=np.uint8)
                if pixels.ndim != 3 or pixels.shape[2] != 3:
                    raise ValueError(f"preprocessing produced shape {pixels.shape}, not (S, S, 3)")
                return index, np.ascontiguousarray(pixels.transpose(2, 0, 1)), None, None
            data = None
            if self.mode == "raw_jpeg" and (_is_path(item) or _is_item(item)):
                if _is_item(item):
                    data, name = item.read(), item.description
                else:
                    with open(item, "rb") as file:
                        data = file.read()
                    name = item
                if data[:3] == _JPEG_MAGIC and self._decodes_on_device(data, name):
                    return index, None, np.frombuffer(data, dtype=np.uint8), None
            pixels = self.tensor_transform(_rgb_chw(item, self.target, data))
            return index, np.ascontiguousarray(pixels.numpy()), None, None
        except Exception as error:  # reported with the file name by the caller
            return index, None, None, f"{type(error).__name__}: {error}"

    def _decodes_on_device(self, data, path) -> bool:
        """Whether a JPEG file goes to the accelerator: upright as stored and not reduced."""
        header = _jpeg_header(data, path)
        if header is None:
            return True  # the accelerator's decoder, then Pillow, report the damage
        with header:
            orientation = _orientation(header)
            scale = 1 if self.target is None else self.target.scale(*header.size, orientation)
        return orientation == 1 and scale == 1


def collate_decoded(samples):
    """DataLoader ``collate_fn`` for :class:`ImageDecodingDataset` items.

    Parameters
    ----------
    samples : list of tuple
        Items of an :class:`ImageDecodingDataset`.

    Returns
    -------
    batch : tuple
        ``(pixel_indices, pixels, jpeg_indices, jpeg_bytes, errors)`` with ``pixels`` a uint8
        torch tensor ``(B, 3, S, S)`` (or None), ``jpeg_bytes`` a list of uint8 tensors and
        ``errors`` a list of ``(index, reason)``.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.image_loading import collate_decoded
    >>> samples = [(0, np.zeros((3, 4, 4), np.uint8), None, None), (1, None, None, "OSError")]
    >>> indices, pixels, _, _, errors = collate_decoded(samples)
    >>> indices, tuple(pixels.shape), errors
    ([0], (1, 3, 4, 4), [(1, 'OSError')])
    """
    import torch

    pixel_indices, pixels, jpeg_indices, jpeg_bytes, errors = [], [], [], [], []
    for index, image, data, error in samples:
        if error is not None:
            errors.append((index, error))
        elif data is not None:
            jpeg_indices.append(index)
            jpeg_bytes.append(torch.from_numpy(data.copy()))
        else:
            pixel_indices.append(index)
            pixels.append(torch.from_numpy(image))
    stacked = torch.stack(pixels) if pixels else None
    return pixel_indices, stacked, jpeg_indices, jpeg_bytes, errors


def decode_in_batches(dataset: ImageDecodingDataset, batch_size: int, n_threads: int = 1):
    """Decode ``dataset`` in this process, one batch at a time, as collated DataLoader batches.

    The next batch is decoded only when asked for, so decoding alternates with the consumer's
    work (the forward pass) instead of competing with it for the cores. Each batch is split
    across ``n_threads`` threads: the JPEG decoder, Pillow and torch's resize release the GIL.

    Parameters
    ----------
    dataset : ImageDecodingDataset
        The images to decode.
    batch_size : int
        Images per batch.
    n_threads : int, default=1
        Decoding threads per batch.

    Yields
    ------
    batch : tuple
        What :func:`collate_decoded` returns, one batch at a time.

    Examples
    --------
    >>> import numpy as np
    >>> from torchvision import transforms
    >>> from skicm.image_loading import ImageDecodingDataset, decode_in_batches
    >>> images = [np.zeros((8, 8, 3), np.uint8)] * 5
    >>> dataset = ImageDecodingDataset(images, transforms.Compose([]))
    >>> [len(batch[0]) for batch in decode_in_batches(dataset, batch_size=2)]
    [2, 2, 1]
    """
    from concurrent.futures import ThreadPoolExecutor

    n_threads = max(1, int(n_threads))
    starts = range(0, len(dataset), batch_size)
    if n_threads == 1 or batch_size == 1:
        for start in starts:
            stop = min(len(dataset), start + batch_size)
            yield collate_decoded([dataset[i] for i in range(start, stop)])
        return

    def decode(indices):
        return [dataset[i] for i in indices]

    with ThreadPoolExecutor(n_threads, thread_name_prefix="skicm-decode") as pool:
        for start in starts:
            stop = min(len(dataset), start + batch_size)
            # Interleaved slices; every item carries its own index, so the order is immaterial.
            slices = [range(start + k, stop, n_threads) for k in range(n_threads)]
            yield collate_decoded([item for part in pool.map(decode, slices) for item in part])
