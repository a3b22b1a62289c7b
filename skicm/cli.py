"""The ``skicm`` command: ``skicm demo`` and ``skicm evaluate``.

``skicm demo`` runs the Colored MNIST protocol of IRM on scikit-learn's digits (offline, in
seconds, no model weights); ``skicm evaluate ROOT`` scores CLIP + logistic regression with and
without the invariant projector, leaving one domain out at a time, on a DomainBed-layout folder.
"""

from __future__ import annotations

import argparse
import sys

#: Interventional data that ``skicm evaluate`` can give the projector.
INTERVENTION_KINDS = ("groups", "image", "text")

__all__ = ["build_parser", "main"]

_NO_WEIGHTS = ("none", "random", "")


def _n_components(value):
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {value!r}")
    return n


def _non_negative_float(value):
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {value!r}")
    return number


def _pretrained(value):
    return None if value.lower() in _NO_WEIGHTS else value


def _add_projector_options(parser):
    group = parser.add_argument_group("invariant projector")
    group.add_argument(
        "--n-components",
        type=_n_components,
        default="auto",
        help="rank of the invariant subspace: 'auto' (positive eigenvalues) or an integer "
        "(default: auto)",
    )
    group.add_argument(
        "--alpha",
        type=_non_negative_float,
        default=1.0,
        help="weight of the intervention term (default: 1.0)",
    )


def _add_model_options(parser, *, required):
    group = parser.add_argument_group("CLIP model (open_clip)")
    group.add_argument(
        "--model-name",
        required=required,
        default=None,
        help="open_clip architecture, e.g. ViT-B-32"
        + ("" if required else " (default: none, use raw pixels)"),
    )
    group.add_argument(
        "--pretrained",
        type=_pretrained,
        default="openai",
        help="open_clip pretrained tag, local checkpoint file or hf-hub:org/repo; 'none' for "
        "random weights (default: openai)",
    )
    group.add_argument(
        "--model-config",
        metavar="JSON",
        help="register an open_clip model config file first; its file name (without .json) "
        "becomes a --model-name",
    )
    group.add_argument("--device", default="auto", help="torch device (default: auto)")
    group.add_argument(
        "--batch-size", type=int, default=64, help="images per forward pass (default: 64)"
    )


def build_parser():
    """Return the :class:`argparse.ArgumentParser` of the ``skicm`` command."""
    parser = argparse.ArgumentParser(
        prog="skicm",
        description="CLIP-ICM for scikit-learn: invariant projections of CLIP embeddings.",
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = subcommands.add_parser(
        "demo",
        help="Colored MNIST (IRM protocol) on scikit-learn's digits: ERM vs projector vs oracle",
        description="Run IRM's Colored MNIST protocol on scikit-learn's bundled 8x8 digits "
        "(offline, seconds): plain ERM, the InvariantProjector fitted on colour-swap "
        "interventions, and a grayscale oracle, each followed by logistic regression. With "
        "--model-name the classifiers see CLIP embeddings of the images instead of pixels.",
    )
    demo.add_argument(
        "--fast", action="store_true", help="200 samples per environment instead of 599"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed of the data (default: 0)")
    demo.add_argument("--plot", metavar="PATH", help="save the projector's spectrum plot here")
    _add_projector_options(demo)
    _add_model_options(demo, required=False)

    evaluate = subcommands.add_parser(
        "evaluate",
        help="leave-one-domain-out accuracy of CLIP + logistic regression, with and without "
        "the projector",
        description="Embed every image of ROOT (laid out as ROOT/domain/class/image) with a "
        "CLIP model, then for each domain train on the others and test on it: logistic "
        "regression on the embeddings, and on their projection by an InvariantProjector "
        "learned from the training folds' interventional data: the training domains' labels "
        "(groups: class-conditional domain differences), the paper's image interventions "
        "(image: counterparts encoded by the same model), or domain prompts built from the "
        "class names (text).",
    )
    evaluate.add_argument("root", metavar="ROOT", help="folder with one subfolder per domain")
    evaluate.add_argument(
        "--domains", nargs="+", metavar="DOMAIN", help="domains to load (default: all)"
    )
    evaluate.add_argument(
        "--class-alias",
        action="append",
        default=[],
        metavar="FOLDER=CLASS",
        help="class name of a class folder named otherwise (repeatable), e.g. hund=dog",
    )
    evaluate.add_argument("--plot", metavar="PATH", help="save a per-domain accuracy plot here")
    evaluate.add_argument(
        "--interventions",
        nargs="+",
        choices=INTERVENTION_KINDS,
        default=["groups"],
        help="interventional data of the projector, one result column each (default: groups)",
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="seed of the image interventions (default: 0)"
    )
    _add_projector_options(evaluate)
    _add_model_options(evaluate, required=True)
    return parser


def _embedder(args):
    from skicm.embedding import CLIPEmbedder

    if args.model_config is not None:
        from pathlib import Path

        import open_clip

        if not Path(args.model_config).is_file():
            raise ValueError(f"--model-config must be a JSON file, got {args.model_config!r}.")
        open_clip.add_model_config(args.model_config)

    return CLIPEmbedder(
        model_name=args.model_name,
        pretrained=args.pretrained,
        device=args.device,
        batch_size=args.batch_size,
    )


def _save(figure, path):
    figure.savefig(path, dpi=120)
    print(f"plot saved to {path}")


def _run_demo(args):
    from skicm.demo import run_colored_digits_demo

    embedder = None if args.model_name is None else _embedder(args)
    results = run_colored_digits_demo(
        fast=args.fast,
        n_components=args.n_components,
        alpha=args.alpha,
        embedder=embedder,
        random_state=args.seed,
    )
    print(results)
    if args.plot:
        from skicm.plotting import plot_spectrum

        _save(plot_spectrum(results.projector, title="skicm demo: colored digits"), args.plot)
    return 0


def _class_aliases(pairs):
    aliases = {}
    for pair in pairs:
        folder, sep, name = pair.partition("=")
        if not sep or not folder or not name:
            raise ValueError(f"--class-alias must look like FOLDER=CLASS, got {pair!r}.")
        aliases[folder] = name
    return aliases


def _run_evaluate(args):
    import numpy as np
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skicm.datasets._image_folders import load_image_folders
    from skicm.evaluation import format_domain_scores, leave_one_domain_out
    from skicm.projection import InvariantProjector

    data = load_image_folders(
        args.root, domains=args.domains, class_aliases=_class_aliases(args.class_alias)
    )
    print(
        f"{len(data.paths)} images, {len(data.target_names)} classes, domains "
        f"{', '.join(data.domain_names)}; model {args.model_name} "
        f"(pretrained={args.pretrained})",
        flush=True,
    )
    embedder = _embedder(args)
    Z = np.asarray(embedder.transform(data.paths))

    def probe():
        return [StandardScaler(), LogisticRegression(max_iter=2000)]

    def projector(**params):
        return InvariantProjector(n_components=args.n_components, alpha=args.alpha, **params)

    results = {
        "CLIP + LR": leave_one_domain_out(make_pipeline(*probe()), Z, data.target, data.domains)
    }
    for kind in dict.fromkeys(args.interventions):
        name = f"CLIP-ICM ({kind}) + LR"
        if kind == "groups":
            results[name] = leave_one_domain_out(
                make_pipeline(projector(), *probe()),
                Z,
                data.target,
                data.domains,
                domain_param="invariantprojector__groups",
            )
        elif kind == "image":
            from skicm.interventions import ImageInterventions

            counterparts = ImageInterventions(random_state=args.seed).apply(data.paths)
            Z_intervened = np.asarray(embedder.transform(counterparts))
            results[name] = leave_one_domain_out(
                make_pipeline(projector(), *probe()),
                Z,
                data.target,
                data.domains,
                params={"invariantprojector__X_intervened": Z_intervened},
            )
        else:  # text: domain prompts of the class names, encoded by the same model
            from skicm.interventions import TextInterventions

            text = TextInterventions(clone(embedder), class_names=list(data.target_names))
            results[name] = leave_one_domain_out(
                make_pipeline(projector(interventions=text), *probe()),
                Z,
                data.target,
                data.domains,
            )
    print(format_domain_scores(results))
    if args.plot:
        from skicm.plotting import plot_domain_scores

        figure = plot_domain_scores(results, title=f"leave-one-domain-out: {data.root}")
        _save(figure, args.plot)
    return 0


def main(argv=None):
    """Run the ``skicm`` command line and return its exit status.

    Parameters
    ----------
    argv : list of str or None, default=None
        Arguments without the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success; 2 when no subcommand is given or the run rejects an argument (message on
        stderr). Arguments that argparse itself rejects exit with ``SystemExit(2)``, as usual.

    Examples
    --------
    >>> from skicm.cli import main
    >>> main(["demo", "--fast"])  # doctest: +ELLIPSIS
    Colored digits (IRM's Colored MNIST protocol on scikit-learn's 8x8 digits)
    ...
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            return _run_demo(args)
        return _run_evaluate(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"skicm {args.command}: error: {error}", file=sys.stderr)
        return 2
