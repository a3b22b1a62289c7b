"""Options and helpers shared by the ``skicm`` subcommands."""

from __future__ import annotations

import argparse

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


def add_projector_options(parser):
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


def add_model_options(parser, *, required):
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


def embedder_from_args(args):
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


def save_figure(figure, path):
    figure.savefig(path, dpi=120)
    print(f"plot saved to {path}")
