"""The closest peers of CLIP-ICM as scikit-learn estimators on frozen embeddings.

Each is a linear map of embeddings, or a linear head, from a published method:

- :class:`OrthogonalProjection`: Orth-Proj and Orth-Cali (Chuang et al., 2023);
- :class:`PromptProjection`: PRISM-mini (Molahasani et al., ICCV 2025);
- :class:`RoboShot`: RoboShot (Adila et al., ICLR 2024);
- :class:`ConceptErasure`: LEACE (Belrose et al., NeurIPS 2023), through ``concept-erasure``;
- :class:`GroupBalancedProbe`: DFR (Kirichenko et al., ICLR 2023);
- :class:`WiSEHead`: WiSE-FT's linear-classifier variant (Wortsman et al., CVPR 2022).
"""

from skicm.baselines._concept_erasure import ConceptErasure
from skicm.baselines._group_balanced import GroupBalancedProbe
from skicm.baselines._orthogonal import OrthogonalProjection
from skicm.baselines._prompt_projection import PromptProjection
from skicm.baselines._roboshot import RoboShot
from skicm.baselines._wise import WiSEHead

__all__ = [
    "ConceptErasure",
    "GroupBalancedProbe",
    "OrthogonalProjection",
    "PromptProjection",
    "RoboShot",
    "WiSEHead",
]
