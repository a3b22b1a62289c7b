"""skicm: CLIP-ICM for scikit-learn.

Learn the invariant subspace of CLIP embeddings from interventional data and classify there,
robust out of distribution (Song et al., "Learning Invariant Causal Mechanism from
Vision-Language Models", ICML 2025).
"""

from skicm.embedding import CLIPEmbedder
from skicm.exceptions import NoInvarianceWarning, RankWarning
from skicm.image_embedder import ImageEmbedder
from skicm.interventions import ImageInterventions, TextInterventions
from skicm.pipelines import make_clip_icm_pipeline
from skicm.projection import InterventionStatistics, InvariantProjector
from skicm.zero_shot import ZeroShotClassifier

__version__ = "0.1.0"

__all__ = [
    "CLIPEmbedder",
    "ImageEmbedder",
    "ImageInterventions",
    "InterventionStatistics",
    "InvariantProjector",
    "NoInvarianceWarning",
    "RankWarning",
    "TextInterventions",
    "ZeroShotClassifier",
    "__version__",
    "make_clip_icm_pipeline",
]
