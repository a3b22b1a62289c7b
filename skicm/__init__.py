"""skicm: CLIP-ICM for scikit-learn.

Learn the invariant subspace of CLIP embeddings from interventional data and classify there,
robust out of distribution (Song et al., "Learning Invariant Causal Mechanism from
Vision-Language Models", ICML 2025).
"""

from skicm.embedding import CLIPEmbedder
from skicm.exceptions import NoInvarianceWarning
from skicm.projection import InterventionStatistics, InvariantProjector

__version__ = "0.1.0"

__all__ = [
    "CLIPEmbedder",
    "InterventionStatistics",
    "InvariantProjector",
    "NoInvarianceWarning",
    "__version__",
]
