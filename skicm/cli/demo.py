"""``skicm demo``: IRM's Colored MNIST protocol on scikit-learn's digits."""

from __future__ import annotations

from skicm.cli._common import (
    add_model_options,
    add_projector_options,
    embedder_from_args,
    save_figure,
)


def add_parser(subcommands):
    """Register ``skicm demo`` on ``subcommands``."""
    demo = subcommands.add_parser(
        "demo",
        help="Colored MNIST (IRM protocol) on scikit-learn's digits: ERM vs projector vs oracle",
        description="Run IRM's Colored MNIST protocol on scikit-learn's bundled 8x8 digits "
        "(offline, seconds): plain ERM, the InvariantProjector fitted on colour-swap "
        "interventions, and a grayscale oracle, each followed by logistic regression. With "
        "--model-name the classifiers see CLIP embeddings of the images instead of pixels, with "
        "--image-model the features of any torch image model.",
    )
    demo.add_argument(
        "--fast", action="store_true", help="200 samples per environment instead of 599"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed of the data (default: 0)")
    demo.add_argument("--plot", metavar="PATH", help="save the projector's spectrum plot here")
    add_projector_options(demo)
    add_model_options(demo, required=False)
    demo.set_defaults(run=run)
    return demo


def run(args):
    """Run ``skicm demo`` with parsed ``args``; return the exit status."""
    from skicm.demo import run_colored_digits_demo

    uses_model = args.model_name is not None or args.image_model is not None
    embedder = embedder_from_args(args) if uses_model else None
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

        save_figure(plot_spectrum(results.projector, title="skicm demo: colored digits"), args.plot)
    return 0
