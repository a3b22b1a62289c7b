"""``skicm embed``: embed an image collection into resumable Parquet shards, here or on Ray."""

from __future__ import annotations

import sys
import warnings

from skicm.cli._common import (
    add_class_alias_options,
    add_collection_options,
    add_model_options,
    class_aliases_from_args,
    embedder_from_args,
    positive_int,
)


def add_parser(subcommands):
    """Register ``skicm embed`` on ``subcommands``."""
    embed = subcommands.add_parser(
        "embed",
        help="embed a folder, listing, WebDataset shards or Hugging Face dataset of images into "
        "Parquet shards (resumable; local or Ray)",
        description="Embed every image of SOURCE into Parquet shards under --out (columns path, "
        "key, embedding, and label/domain when SOURCE knows them) with a manifest of the model; "
        "every shard names its model in its Parquet metadata, and readers check it. "
        "A rerun skips the shards already written, so a killed run resumes; files that cannot "
        "be read are all reported and the others written (exit status 1 when some could not). "
        "SOURCE is a DomainBed-layout folder (root/domain/class/image), any folder of images, "
        "a .csv/.parquet file with a 'path' column and optional 'label' and 'domain' columns, "
        "WebDataset tar shards (a .tar file, a glob or a brace pattern such as "
        "'shards-{000..009}.tar'; the path column holds TAR#SAMPLE_KEY), or a Hugging Face "
        "dataset (a save_to_disk folder, or hf:NAME[@CONFIG] from the local cache; the path "
        "column holds hf:FINGERPRINT/SPLIT/ROW).",
    )
    embed.add_argument(
        "source",
        metavar="SOURCE",
        help="folder of images, listing file, WebDataset shards or Hugging Face dataset",
    )
    embed.add_argument("--out", metavar="DIR", required=True, help="output folder of the shards")
    labels = embed.add_argument_group("labels (DomainBed-layout folder)")
    add_class_alias_options(
        labels,
        alias_help="class name (label column) of a class folder named otherwise (repeatable), "
        "e.g. hund=dog; as skicm evaluate's",
        file_help="file of class aliases: one FOLDER=CLASS line per class folder, or a JSON object",
    )
    add_collection_options(embed, class_names=False, labels_needed=False)
    add_model_options(embed, required=True)
    group = embed.add_argument_group("execution")
    group.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: in this process; ray: Ray Data hands the files to actors that load the "
        "model once (four per GPU, or one per 8 CPU cores) (default: local)",
    )
    group.add_argument(
        "--decode-in",
        choices=("encoder", "tasks"),
        default="encoder",
        help="Ray engine: decode in the encoding actors, between forward passes and on the "
        "GPU for JPEG when they encode on one (encoder), or in separate Ray Data CPU tasks "
        "(tasks) (default: encoder)",
    )
    group.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster to attach to ('auto', 'ray://head:10001'); an address where nothing "
        "answers fails within 10 s; default: start a local Ray instance",
    )
    group.add_argument(
        "--num-cpus",
        type=positive_int,
        help="CPUs of the local Ray instance (default: all)",
    )
    group.add_argument(
        "--shard-size",
        type=positive_int,
        default=10_000,
        help="images per shard, the unit of resumption (default: 10000)",
    )
    group.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    embed.set_defaults(run=run)
    return embed


def run(args):
    """Run ``skicm embed`` with parsed ``args``; return the exit status."""
    from skicm.distributed import embed_collection

    if args.address is not None and args.engine != "ray":
        raise ValueError("--address attaches to a Ray cluster; it needs --engine ray.")
    if args.decode_in != "encoder" and args.engine != "ray":
        raise ValueError(f"--decode-in {args.decode_in} needs --engine ray.")
    with warnings.catch_warnings():
        # Every bad file is listed below, not only the first ones the warning names.
        warnings.filterwarnings("ignore", "[0-9]+ file\\(s\\) could not be embedded")
        result = embed_collection(
            args.source,
            args.out,
            embedder=embedder_from_args(args),
            engine=args.engine,
            address=args.address,
            decode_in=args.decode_in,
            shard_size=args.shard_size,
            num_cpus=args.num_cpus,
            class_aliases=class_aliases_from_args(args) or None,
            image_key=args.image_key,
            label_key=args.label_key,
            domain_key=args.domain_key,
            split=args.split,
            progress=not args.no_progress,
        )
    for path, reason in result.bad_files.items():
        print(f"skicm embed: cannot embed {path}: {reason}", file=sys.stderr)
    print(
        f"{result.n_embedded} image(s) embedded into {len(result.shards)} new shard(s) under "
        f"{result.out}; {result.n_skipped} already there; {len(result.bad_files)} could not be "
        "read."
    )
    return 1 if result.bad_files else 0
