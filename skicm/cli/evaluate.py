"""``skicm evaluate``: leave-one-domain-out accuracy on a DomainBed-layout folder."""

from __future__ import annotations

from skicm.cli._common import (
    add_model_options,
    add_projector_options,
    embedder_from_args,
    save_figure,
)

#: Interventional data that ``skicm evaluate`` can give the projector.
INTERVENTION_KINDS = ("groups", "image", "text")


def add_parser(subcommands):
    """Register ``skicm evaluate`` on ``subcommands``."""
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
    add_projector_options(evaluate)
    add_model_options(evaluate, required=True)
    evaluate.set_defaults(run=run)
    return evaluate


def _class_aliases(pairs):
    aliases = {}
    for pair in pairs:
        folder, sep, name = pair.partition("=")
        if not sep or not folder or not name:
            raise ValueError(f"--class-alias must look like FOLDER=CLASS, got {pair!r}.")
        aliases[folder] = name
    return aliases


def run(args):
    """Run ``skicm evaluate`` with parsed ``args``; return the exit status."""
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
    embedder = embedder_from_args(args)
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
        save_figure(figure, args.plot)
    return 0
