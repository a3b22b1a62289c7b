"""``skicm evaluate SOURCE --protocol robustness``: train on ImageNet, score on its shifts.

SOURCE is the training collection (ImageNet's train split), ``--id-test`` the ID test set
(ImageNet's validation split) and each ``--shift NAME=SOURCE`` a shifted test set: WebDataset
shards in CLIP_benchmark's layout (``wds_<name>/{split}/{n}.tar`` with ``.cls`` labels and a
``classnames.txt`` at the root) or Hugging Face datasets, read by
:func:`skicm.datasets.load_image_collection`. The protocol is
:func:`skicm.evaluation._robustness.evaluate_robustness`, so Python code gets the same
numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skicm.cli._common import positive_int

__all__ = ["add_robustness_options", "run_robustness_command"]

# The options of --protocol robustness and their defaults (given to another protocol: an error).
DEFAULTS = {"id_test": None, "shift": None, "shots": None, "variant_classes": False,
            "baseline": "linear probe", "reference_line": None, "id_name": "imagenet"}  # fmt: skip
# Options of the other protocols that have no meaning here.
_OTHER_PROTOCOLS = ("domains", "test_domains", "class_alias", "class_alias_file", "base_classes",
                    "layout", "target_attribute", "spurious_attribute", "image_root")  # fmt: skip


def _shift(value):
    name, sep, source = value.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise argparse.ArgumentTypeError(
            f"must be NAME=SOURCE (e.g. imagenet-r=wds_imagenet-r/test/0.tar), got {value!r}"
        )
    return name.strip(), source.strip()


def add_robustness_options(parser):
    """Add the options of ``--protocol robustness`` to ``skicm evaluate``'s parser.

    ``--id-test SOURCE``, ``--shift NAME=SOURCE`` (repeatable), ``--shots K``,
    ``--variant-classes``, ``--baseline METHOD``, ``--reference-line SLOPE INTERCEPT`` and
    ``--id-name NAME``, in an argument group of their own. The options the other protocols
    share (``--model-name``, ``--store``, ``--seeds``, the grid, ``--scoring``,
    ``--templates``, ``--methods``, ``--output``, ``--n-jobs``, the collection keys) are
    ``skicm evaluate``'s.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        ``skicm evaluate``'s parser.

    Returns
    -------
    group : argparse._ArgumentGroup

    Examples
    --------
    >>> import argparse
    >>> from skicm.cli._robustness import add_robustness_options
    >>> parser = argparse.ArgumentParser()
    >>> _ = add_robustness_options(parser)
    >>> args = parser.parse_args(["--id-test", "val.tar", "--shift", "imagenet-r=r.tar",
    ...                           "--shots", "16"])
    >>> args.shift, args.shots, args.variant_classes
    ([('imagenet-r', 'r.tar')], 16, False)
    """
    group = parser.add_argument_group(
        "--protocol robustness",
        "train on SOURCE (ImageNet's train split), choose hyperparameters on held-out "
        "training rows, score on --id-test and on each --shift, a shift's predictions "
        "restricted to its classes; effective robustness and its logit plot",
    )
    group.add_argument(
        "--id-test", metavar="SOURCE", help="the ID test set (ImageNet's validation split)"
    )
    group.add_argument(
        "--shift",
        action="append",
        type=_shift,
        metavar="NAME=SOURCE",
        help="a shifted test set, repeatable (e.g. imagenet-r=wds_imagenet-r/test/'{0..3}.tar'); "
        "its labels index its own classnames.txt",
    )
    group.add_argument(
        "--shots",
        type=positive_int,
        metavar="K",
        help="images per class drawn from SOURCE for each seed (default: all)",
    )
    group.add_argument(
        "--variant-classes",
        action="store_true",
        help="map each shift's classes into ImageNet-1k as CLIP_benchmark defines the variant "
        "NAME names (imagenetv2, imagenet_sketch, imagenet-r, imagenet-a, objectnet); default: "
        "by class name",
    )
    group.add_argument(
        "--baseline",
        metavar="METHOD",
        default="linear probe",
        help="the method whose line (through its grid's candidates) effective robustness is "
        "measured from (default: linear probe)",
    )
    group.add_argument(
        "--reference-line",
        nargs=2,
        type=float,
        metavar=("SLOPE", "INTERCEPT"),
        help="a baseline line logit(OOD) = SLOPE * logit(ID) + INTERCEPT instead of --baseline "
        "(e.g. Taori et al.'s fit over ImageNet models)",
    )
    group.add_argument(
        "--id-name",
        default="imagenet",
        metavar="NAME",
        help="the name of the ID test set in the results (default: imagenet)",
    )
    return group


def _load(source, what, options, class_names=None):
    from skicm.cli._common import load_labelled_collection
    from skicm.datasets._collection_reader import is_collection

    if is_collection(source) is None:
        raise ValueError(
            f"{what} {source!r} is neither WebDataset shards (a .tar, a glob or a brace "
            "pattern) nor a Hugging Face dataset (a save_to_disk folder or hf:NAME)."
        )
    return load_labelled_collection(source, {**options, "class_names": class_names}, what)


def _collection_name(source):
    """The collection's name: its folder, or the one above a split folder (``wds_x/train``)."""
    path = Path(str(source))
    folder = path if path.is_dir() else path.parent
    if folder.name in ("train", "test", "val", "validation") and folder.parent.name:
        folder = folder.parent
    return folder.name or str(source)


def _collection_options(args):
    return {
        name: getattr(args, name, None)
        for name in ("image_key", "label_key", "domain_key", "split")
    }


def _check_args(args, embedder):
    if args.source is None:
        raise ValueError(
            "--protocol robustness needs SOURCE: the training collection (ImageNet's train "
            "split as WebDataset shards or a Hugging Face dataset)."
        )
    if getattr(args, "id_test", None) is None:
        raise ValueError("--protocol robustness needs --id-test SOURCE, the ID test set.")
    if not getattr(args, "shift", None):
        raise ValueError("--protocol robustness needs at least one --shift NAME=SOURCE.")
    names = [name for name, _ in args.shift]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--shift names {', '.join(map(repr, repeated))} more than once.")
    if getattr(args, "dataset", None) not in (None, "folder"):
        raise ValueError(
            f"--dataset {args.dataset} builds a leave-one-domain-out data set; --protocol "
            "robustness reads SOURCE, --id-test and --shift as collections."
        )
    for option in _OTHER_PROTOCOLS:
        if getattr(args, option, None):
            raise ValueError(
                f"--{option.replace('_', '-')} applies to the other protocols, not to "
                "--protocol robustness."
            )
    if getattr(args, "selection", "training-domain") != "training-domain":
        raise ValueError(
            "--protocol robustness chooses hyperparameters on held-out training rows "
            f"(--selection training-domain); --selection {args.selection} needs training "
            "domains or a test domain to select on."
        )
    if embedder is None:
        raise ValueError(
            "--protocol robustness embeds images: give an encoder (--model-name or --image-model)."
        )
    from skicm.evaluation._results import _use_file_backend

    _use_file_backend(args.output, getattr(args, "plot", None))


def run_robustness_command(args, embedder):
    """``skicm evaluate SOURCE --protocol robustness`` with parsed ``args``; the exit status.

    Reads SOURCE (training), ``--id-test`` and every ``--shift`` with
    :func:`skicm.datasets.load_image_collection` (labels from ``--label-key``, default
    ``cls`` for WebDataset shards and ``label`` for a Hugging Face dataset; class names from
    each collection's ``classnames.txt``), runs
    :func:`~skicm.evaluation._robustness.evaluate_robustness`, prints the tables and writes
    ``--output`` (``results.csv``, ``candidates.csv``, ``results.md``, ``results.png``) and
    ``--plot``.

    Parameters
    ----------
    args : argparse.Namespace
        ``skicm evaluate``'s parsed options, with those of :func:`add_robustness_options`.
    embedder : estimator
        The encoder the options asked for.

    Returns
    -------
    status : int
        0.
    """
    from skicm.evaluation._results import _report_results
    from skicm.evaluation._robustness import evaluate_robustness

    _check_args(args, embedder)
    if getattr(args, "no_progress", False) and "progress" in embedder.get_params():
        embedder.set_params(progress=False)
    options = _collection_options(args)
    class_names = getattr(args, "class_names", None)
    train = _load(args.source, "SOURCE", options, class_names)
    id_test = _load(args.id_test, "--id-test", options, class_names)
    shifts = {
        name: _load(source, f"--shift {name}", {**options, "domain_key": None})
        for name, source in args.shift
    }
    print(
        f"training: {len(train.target)} images, {len(train.target_names)} classes; "
        f"{args.id_name} (ID): {len(id_test.target)} images; "
        + "; ".join(f"{name}: {len(data.target)} images" for name, data in shifts.items()),
        flush=True,
    )
    results = evaluate_robustness(
        train, shifts, id_test=id_test, embedder=embedder, methods=args.methods or "auto",
        interventions=args.interventions or "auto", shots=args.shots, scoring=args.scoring,
        n_components=args.n_components, alpha=args.alpha, C=args.C, seeds=args.seeds,
        templates=args.templates, validation_size=args.validation_size,
        intervention_seed=args.intervention_seed, variant_classes=args.variant_classes,
        baseline=args.baseline, reference_line=args.reference_line, id_name=args.id_name,
        n_jobs=args.n_jobs, progress=not args.no_progress,
    )  # fmt: skip
    title = f"{_collection_name(args.source)}: robustness"
    _report_results(results, title=title, output=args.output, plot=getattr(args, "plot", None))
    return 0
