"""Options and helpers shared by the ``skicm`` subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

_NO_WEIGHTS = ("none", "random", "")


def positive_int(value):
    """argparse type: an integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


def auto_or_positive_int(value):
    """argparse type: ``"auto"`` or an integer >= 1 (ranks, batch sizes)."""
    if value == "auto":
        return value
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be 'auto' or a positive integer, got {value!r}"
        ) from None


def _number(value, *, strict):
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number > 0 if strict else number >= 0):
        kind = "positive" if strict else "non-negative"
        raise argparse.ArgumentTypeError(f"must be a {kind} number, got {value!r}")
    return number


def positive_float(value):
    """argparse type: a number > 0."""
    return _number(value, strict=True)


def non_negative_float(value):
    """argparse type: a number >= 0."""
    return _number(value, strict=False)


def _pretrained(value):
    return None if value.lower() in _NO_WEIGHTS else value


def add_projector_options(parser):
    group = parser.add_argument_group("invariant projector")
    group.add_argument(
        "--n-components",
        type=auto_or_positive_int,
        default="auto",
        help="rank of the invariant subspace: 'auto' (positive eigenvalues) or an integer "
        "(default: auto)",
    )
    group.add_argument(
        "--alpha",
        type=non_negative_float,
        default=1.0,
        help="weight of the intervention term (default: 1.0)",
    )


def add_model_options(parser, *, required):
    """Add the encoder options: ``--model-name`` (open_clip) or ``--image-model`` (any model).

    With ``required=True`` exactly one of the two must be given (argparse says so); else at
    most one.
    """
    group = parser.add_argument_group("encoder (one of --model-name, --image-model)")
    choice = group.add_mutually_exclusive_group(required=required)
    choice.add_argument(
        "--model-name",
        default=None,
        help="open_clip architecture (e.g. ViT-B-32), hf-hub:org/repo or local-dir:FOLDER"
        + ("" if required else " (default: none, use raw pixels)"),
    )
    choice.add_argument(
        "--image-model",
        metavar="SPEC",
        default=None,
        help="any torch image model instead of CLIP: efficientnet-lite0 (built in, offline "
        "ImageNet weights) or package.module:function returning (module, preprocess); no text "
        "tower, so no zero-shot or text interventions",
    )
    group.add_argument(
        "--pretrained",
        type=_pretrained,
        default="openai",
        help="open_clip weights: a pretrained tag, a local checkpoint FILE or hf-hub:org/repo; "
        "'none' for random weights (default: openai)",
    )
    group.add_argument(
        "--model-config",
        metavar="JSON",
        help="register an open_clip model config file first; its file name (without .json) "
        "becomes a --model-name",
    )
    group.add_argument("--device", default="auto", help="torch device (default: auto)")
    group.add_argument(
        "--batch-size",
        type=auto_or_positive_int,
        default="auto",
        help="images per forward pass, or 'auto' (chosen per device; default: auto)",
    )
    group.add_argument(
        "--decode",
        choices=("reduced", "full"),
        default="reduced",
        help="reduced: a JPEG larger than the model's input needs is decoded at 1/2, 1/4 or "
        "1/8 scale by libjpeg (about 2-3x faster on photos, the embedding nearly the same); "
        "full: every image in full. Each has its own store namespace (default: reduced)",
    )


def add_collection_options(parser, *, class_names=True, labels_needed=True):
    """Add the options that read WebDataset shards and Hugging Face datasets.

    ``--image-key``, ``--label-key``, ``--domain-key``, ``--split`` and ``--class-names``:
    the keywords of :func:`skicm.datasets.load_image_collection` (see
    :func:`collection_options`).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Where the options go (in a group of their own).
    class_names : bool, default=True
        Whether to add ``--class-names`` (``skicm embed`` writes the labels as they are).
    labels_needed : bool, default=True
        Whether the command needs labels: then ``--label-key`` defaults to the collection's
        convention (``cls`` for WebDataset, ``label`` for Hugging Face; see
        :func:`load_labelled_collection`); else it has no default (no labels).

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_collection_options(parser)
    >>> collection_options(parser.parse_args(["--label-key", "cls"]))["label_key"]
    'cls'
    """
    items = parser.add_argument_group("collections (WebDataset shards, Hugging Face dataset)")
    items.add_argument(
        "--image-key",
        metavar="KEY",
        help="WebDataset: image extension(s), the first one a sample has (default: "
        "jpg;jpeg;png;webp); Hugging Face: the image column (default: image)",
    )
    default = "cls (WebDataset), label (Hugging Face)" if labels_needed else "no labels"
    items.add_argument(
        "--label-key",
        metavar="KEY",
        help="WebDataset: extension of the label member (text, e.g. cls); Hugging Face: the "
        f"label column (ClassLabel columns give their class names); default: {default}",
    )
    items.add_argument(
        "--domain-key",
        metavar="KEY",
        help="as --label-key, for the domain (environment) of each item; default: no domains",
    )
    items.add_argument(
        "--split", metavar="NAME", help="Hugging Face dataset: the split (when it has several)"
    )
    if not class_names:
        return
    items.add_argument(
        "--class-names",
        metavar="FILE",
        help="class names, one per line, that integer labels index (CLIP_benchmark's "
        "classnames.txt; default: a classnames.txt beside the shards or in the folder above, "
        "else the labels' own text)",
    )


def collection_options(args):
    """The keywords of :func:`skicm.datasets.load_image_collection` from parsed options.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :func:`add_collection_options`.

    Returns
    -------
    options : dict
        ``image_key``, ``label_key``, ``domain_key``, ``split`` and ``class_names``.
    """
    return {
        name: getattr(args, name, None)
        for name in ("image_key", "label_key", "domain_key", "split", "class_names")
    }


def load_labelled_collection(source, options, what="SOURCE"):
    """:func:`skicm.datasets.load_image_collection` for a command that needs labels.

    Without a label key in ``options``, the labels are read from the collection's conventional
    key: the ``cls`` member of WebDataset samples (img2dataset, CLIP_benchmark's mirrors), the
    ``label`` column of a Hugging Face dataset. When that key is missing, the error says it
    was the default and how to name another.

    Parameters
    ----------
    source : str or path-like
        WebDataset shards or a Hugging Face dataset.
    options : dict
        The keywords of :func:`collection_options`.
    what : str, default="SOURCE"
        How errors name the source (an option or argument of the command).

    Returns
    -------
    data : sklearn.utils.Bunch
        As :func:`~skicm.datasets.load_image_collection` returns it, with ``target``.

    Raises
    ------
    ValueError
        If the source has no such labels.
    """
    from skicm.datasets import load_image_collection
    from skicm.datasets._collection_reader import DEFAULT_LABEL_KEYS, is_collection

    kind = is_collection(source)
    options = dict(options)
    defaulted = options.get("label_key") is None and kind in DEFAULT_LABEL_KEYS
    if defaulted:
        options["label_key"] = DEFAULT_LABEL_KEYS[kind]
    try:
        data = load_image_collection(source, **options)
    except ValueError as error:
        if not defaulted or "--label-key" not in str(error):
            raise
        where = "member" if kind == "webdataset" else "column"
        raise ValueError(
            f"{error} (--label-key was not given: {options['label_key']!r} is its default for "
            f"{'WebDataset shards' if kind == 'webdataset' else 'a Hugging Face dataset'}; "
            f"give the label {where} of {what} {os.fspath(source)!r} with --label-key.)"
        ) from None
    if "target" not in data:
        raise ValueError(f"{what} {os.fspath(source)!r} has no labels (--label-key).")
    return data


def register_model_config_file(path):
    """Register the open_clip model config in ``path``; a clear ValueError if it is not one."""
    import json
    from pathlib import Path

    from skicm.model_configs import check_model_config, register_model_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--model-config {str(path)!r}: no such file.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"--model-config {str(path)!r} is not valid JSON: {error}") from None
    check_model_config(config, f"--model-config {str(path)!r}")
    return register_model_config(path.stem, config)


def embedder_from_args(args):
    """The embedder that the encoder options ask for, checked before anything is embedded.

    :class:`skicm.CLIPEmbedder` for ``--model-name``, :class:`skicm.ImageEmbedder` for
    ``--image-model``. The model name, weights (an offline machine fails here, in seconds) and
    options are checked without building the model.
    """
    image_model = getattr(args, "image_model", None)
    decode = getattr(args, "decode", "reduced")
    if args.model_config is not None:
        if image_model is not None:
            raise ValueError(
                "--model-config registers an open_clip architecture: use it with "
                "--model-name, not --image-model."
            )
        register_model_config_file(args.model_config)
    if image_model is not None:
        from skicm.image_embedder import ImageEmbedder

        if args.pretrained not in (None, "openai"):
            raise ValueError(
                f"--pretrained {args.pretrained} applies to --model-name (open_clip); an "
                "--image-model brings its own weights."
            )
        embedder = ImageEmbedder(
            image_model, device=args.device, batch_size=args.batch_size, decode=decode
        )
    else:
        from skicm.embedding import CLIPEmbedder

        if args.model_name is None:
            raise ValueError("give an encoder: --model-name (open_clip) or --image-model SPEC.")
        embedder = CLIPEmbedder(
            model_name=args.model_name,
            pretrained=args.pretrained,
            device=args.device,
            batch_size=args.batch_size,
            decode=decode,
        )
    namespace = embedder.store_namespace()  # checks model, weights, device; builds nothing
    store = getattr(args, "store", None)
    if store is not None:
        embedder.set_params(store=store_from_option(store, namespace))
    return embedder


def store_from_option(value, namespace):
    """The store of ``--store``: a SQLite file, or the output folder of ``skicm embed``.

    A folder holding ``manifest.json`` is read by :class:`skicm.distributed.ShardStore`
    (the shards answer the images they hold; what else is embedded stays in memory); its
    embeddings must be those of this run's encoder (``namespace``), else an error says which
    encoder wrote them. Anything else is the path of a SQLite store.
    """
    path = Path(value)
    if not path.is_dir():
        return value
    if not (path / "manifest.json").is_file():
        raise ValueError(
            f"--store {value}: a folder must be the output of skicm embed (it has no "
            "manifest.json); give a file path for a SQLite store."
        )
    from skicm.distributed import ShardStore

    store = ShardStore(path)
    if store.namespace != namespace:
        raise ValueError(
            f"--store {value} holds the embeddings of another encoder (namespace "
            f"{store.namespace!r}); this run's encoder has {namespace!r}: give skicm embed's "
            "--model-name / --image-model, --pretrained and --decode."
        )
    return store


def save_figure(figure, path):
    figure.savefig(path, dpi=120)
    print(f"plot saved to {path}")


_CLASS_ALIAS_HELP = "class name of a class folder named otherwise (repeatable), e.g. hund=dog"
_CLASS_ALIAS_FILE_HELP = (
    "file of class aliases: one FOLDER=CLASS line per class folder, or a JSON object "
    "(class_aliases of load_image_folders)"
)


def add_class_alias_options(parser, *, alias_help=_CLASS_ALIAS_HELP, file_help=None):
    """Add ``--class-alias FOLDER=CLASS`` (repeatable) and ``--class-alias-file FILE``.

    Read them back with :func:`class_aliases_from_args`.

    Parameters
    ----------
    parser : argparse.ArgumentParser or argument group
        Where the options go.
    alias_help, file_help : str, optional
        Help texts of the two options (defaults: those of ``skicm evaluate``).

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_class_alias_options(parser)
    >>> args = parser.parse_args(["--class-alias", "hund=dog"])
    >>> class_aliases_from_args(args)
    {'hund': 'dog'}
    """
    parser.add_argument(
        "--class-alias", action="append", default=[], metavar="FOLDER=CLASS", help=alias_help
    )
    parser.add_argument(
        "--class-alias-file", metavar="FILE", help=file_help or _CLASS_ALIAS_FILE_HELP
    )


def class_aliases_from_args(args):
    """The ``class_aliases`` of :func:`skicm.datasets.load_image_folders` from the options.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :func:`add_class_alias_options` (``class_alias``, a list of
        ``FOLDER=CLASS`` strings, and ``class_alias_file``, a path or None).

    Returns
    -------
    class_aliases : dict or str
        ``{folder: class}`` from ``--class-alias`` (empty without any), or the path of
        ``--class-alias-file`` (load_image_folders reads and checks the file).

    Raises
    ------
    ValueError
        If both options are given, or a ``--class-alias`` is not ``FOLDER=CLASS``.

    Examples
    --------
    >>> import argparse
    >>> class_aliases_from_args(
    ...     argparse.Namespace(class_alias=["auto=car"], class_alias_file=None)
    ... )
    {'auto': 'car'}
    """
    pairs, path = args.class_alias, args.class_alias_file
    if path is not None and pairs:
        raise ValueError("give --class-alias or --class-alias-file, not both.")
    if path is not None:
        return path
    aliases = {}
    for pair in pairs:
        folder, sep, name = pair.partition("=")
        if not sep or not folder or not name:
            raise ValueError(f"--class-alias must look like FOLDER=CLASS, got {pair!r}.")
        aliases[folder] = name
    return aliases
