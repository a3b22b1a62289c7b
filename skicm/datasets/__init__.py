"""Data generators and loaders with known answers, for tests, docs and evaluation.

Every data set returns a :class:`~sklearn.utils.Bunch` with the same keys (scikit-learn's
names), so that a protocol written for one runs on all of them:

=====================  ==========================================================================
key                    what it holds
=====================  ==========================================================================
``data``               (n, d) features or flattened pixels (data sets of arrays)
``paths``              the n image files (data sets of files: :func:`load_image_folders`)
``target``             (n,) labels
``target_names``       the class names, when the data set knows them
``environments``       (n,) the environment (domain) of each row
``environment_names``  the distinct environments, each once: sorted, or in the order the data
                       set documents (Colored MNIST: "+90%", "+80%", "-90%")
``data_intervened``    (n, d) aligned counterparts: row i is row i with the variant factors
                       changed, where the data set has them
``images``             (n, H, W, 3) uint8 images, where the data set has them; for
                       :func:`load_image_collection`, the (n,) object array of its images
                       (:class:`~skicm.image_loading.CollectionImage`: tar members, dataset rows)
``images_intervened``  (n, H, W, 3) uint8 counterparts of ``images``, where it has them
=====================  ==========================================================================

Every data set has ``target``, ``environments`` and ``environment_names``, and ``data``,
``paths`` or (:func:`load_image_collection`) ``images``; all arrays have one row per sample.
Keys a data set had before this convention stay as aliases of the same arrays: ``X``, ``y``,
``X_intervened`` of :func:`make_linear_scm`; ``X``, ``X_swapped``, ``X_gray``, ``y``,
``environment``, ``images_swapped`` of :func:`make_colored_digits`; ``domains``,
``domain_names`` of :func:`load_image_folders` (and :func:`load_image_collection`).
:func:`load_mnist` is not a data set of this kind: it returns the ``(images, labels)`` arrays
that :func:`make_colored_mnist` and :func:`make_rotated_mnist` turn into one.

Examples
--------
>>> from skicm.datasets import make_colored_digits, make_linear_scm
>>> for data in (make_linear_scm(n_samples=300, random_state=0),
...              make_colored_digits(random_state=0)):
...     print(data.data.shape, data.target.shape, data.environments.shape,
...           data.environment_names, data.data_intervened.shape)
(300, 8) (300,) (300,) [0, 1, 2] (300, 8)
(1797, 128) (1797,) (1797,) [0, 1, 2] (1797, 128)
"""

from skicm.datasets._colored_digits import make_colored_digits
from skicm.datasets._group_metadata import (
    load_celeba_attributes,
    load_context_folders,
    load_group_metadata,
    load_waterbirds_metadata,
)
from skicm.datasets._image_collection import load_image_collection
from skicm.datasets._image_folders import load_image_folders
from skicm.datasets._imagenet_variants import IMAGENET_VARIANTS, imagenet_variant
from skicm.datasets._mnist import load_mnist, make_colored_mnist, make_rotated_mnist
from skicm.datasets._scm import make_linear_scm
from skicm.datasets._spurious_digits import make_spurious_digits

__all__ = [
    "IMAGENET_VARIANTS",
    "imagenet_variant",
    "load_celeba_attributes",
    "load_context_folders",
    "load_group_metadata",
    "load_image_collection",
    "load_image_folders",
    "load_mnist",
    "load_waterbirds_metadata",
    "make_colored_digits",
    "make_colored_mnist",
    "make_linear_scm",
    "make_rotated_mnist",
    "make_spurious_digits",
]
