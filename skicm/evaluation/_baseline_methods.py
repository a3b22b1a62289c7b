"""The baselines of :mod:`skicm.baselines` as methods of the evaluation (registry entries).

Importing this module registers one :class:`~skicm.evaluation.Method` per baseline, so that
every protocol (leave-one-domain-out, open-class, spurious groups) and ``skicm evaluate
--methods`` can name them, under the protocol's selection rule and grid. The concept a
baseline removes or balances is what the protocol passes as ``groups``: the training domain
of each row under leave-one-domain-out, the spurious attribute (Waterbirds' place) under the
groups protocol. Text-driven baselines describe that concept in prompts built from the
names of the training domains (:data:`ATTRIBUTE_TEMPLATES`, :data:`PAIR_TEMPLATE`).

The entries are not run by ``methods="auto"`` of the leave-one-domain-out protocol
(``default=False``: name them); the groups protocol runs them all by default.
"""

from __future__ import annotations

import numpy as np

from skicm.baselines import (
    ConceptErasure,
    GroupBalancedProbe,
    OrthogonalProjection,
    PromptProjection,
    RoboShot,
    WiSEHead,
)
from skicm.evaluation._methods import (
    Method,
    available_methods,
    grid_product,
    make_linear_probe,
    register_method,
)

#: Descriptions of one value ``{}`` of the spurious attribute (a domain or place name, with
#: underscores as spaces): Orth-Proj's biased prompts, PRISM-mini's descriptions (averaged
#: per value), RoboShot's harmful insights (one pair per template and two values).
ATTRIBUTE_TEMPLATES = ("{}", "a photo of {}.", "a {} background.")

#: A class ``{cls}`` with a value ``{attribute}`` of the spurious attribute: Orth-Cali's
#: calibration pairs are one class with two values.
PAIR_TEMPLATE = "a {attribute} photo of a {cls}."

#: Orth-Cali's ``lambda`` values searched (the authors' default is 1000).
CALIBRATION_STRENGTHS = (10.0, 1000.0)

#: WiSE's mixing weights searched (0: the zero-shot head, 1: the probe).
WISE_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)

#: Names of the registered baseline methods, in column order.
BASELINE_METHODS = []


def _words(names):
    return [str(name).replace("_", " ") for name in names]


def _attribute_values(context):
    """The spurious attribute's values: the training rows' domains (or places)."""
    values = _words(context.training_domains)
    if len(values) < 2:
        raise ValueError(
            "the text-driven baselines describe the spurious attribute by its values, the "
            f"training domains; the training rows hold only {context.training_domains}."
        )
    return values


def _spurious_prompts(context):
    return [t.format(value) for value in _attribute_values(context) for t in ATTRIBUTE_TEMPLATES]


def _harmful_pairs(context):
    values = _attribute_values(context)
    return [
        (t.format(a), t.format(b))
        for i, a in enumerate(values)
        for b in values[i + 1 :]
        for t in ATTRIBUTE_TEMPLATES
    ]


def _calibration_pairs(context):
    values = _attribute_values(context)
    return [
        (PAIR_TEMPLATE.format(attribute=a, cls=c), PAIR_TEMPLATE.format(attribute=b, cls=c))
        for c in _words(context.class_names or ())
        for i, a in enumerate(values)
        for b in values[i + 1 :]
    ]


def _orth_proj(context, params):
    return OrthogonalProjection(_spurious_prompts(context), encoder=context.text_encoder)


def _orth_cali(context, params):
    return OrthogonalProjection(
        _spurious_prompts(context), encoder=context.text_encoder, calibrated=True,
        calibration_pairs=_calibration_pairs(context),
        calibration_strength=params["calibration_strength"],
    )  # fmt: skip


def _prism_mini(context, params):
    descriptions = {
        value: [t.format(value) for t in ATTRIBUTE_TEMPLATES]
        for value in _attribute_values(context)
    }
    return PromptProjection(descriptions, encoder=context.text_encoder)


def _roboshot(context, params):
    return RoboShot(_harmful_pairs(context), encoder=context.text_encoder)


def _then_probe(transformer):
    def build(context, params):
        from sklearn.pipeline import Pipeline

        step = transformer(context, params)
        return Pipeline(
            [(type(step).__name__.lower(), step), *make_linear_probe(params["C"]).steps]
        )

    return build


def _zero_shot_with(transformer):
    def build(context, params):
        from skicm.zero_shot import ZeroShotClassifier

        return ZeroShotClassifier(
            list(context.class_names), encoder=context.text_encoder,
            templates=context.templates, projector=transformer(context, params),
        )  # fmt: skip

    return build


def _leace(context, params):
    from sklearn.pipeline import Pipeline

    eraser = ConceptErasure().set_fit_request(groups=True)
    return Pipeline([("concepterasure", eraser), *make_linear_probe(params["C"]).steps])


class _LabelConceptBalancedProbe(GroupBalancedProbe):
    """DFR balancing the (label, concept) groups: ``groups`` holds the concept alone."""

    def fit(self, X, y, *, groups=None):
        if groups is not None:
            y_text = np.asarray(y).astype(str).astype(object)
            groups = y_text + "|" + np.asarray(groups).astype(str).astype(object)
        return super().fit(X, y, groups=groups)


def _dfr(context, params):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    probe = _LabelConceptBalancedProbe(
        LogisticRegression(C=params["C"], max_iter=1000), random_state=0
    ).set_fit_request(groups=True)
    return Pipeline([("standardscaler", StandardScaler()), ("groupbalancedprobe", probe)])


def _wise(context, params):
    from sklearn.linear_model import LogisticRegression

    from skicm.zero_shot import ZeroShotClassifier

    head = ZeroShotClassifier(
        list(context.class_names), encoder=context.text_encoder, templates=context.templates
    )
    return WiSEHead(
        head, probe=LogisticRegression(C=params["C"], max_iter=1000), alpha=params["alpha"]
    )


def _wise_class_means(context, params):
    from sklearn.linear_model import LogisticRegression

    from skicm.zero_shot import ZeroShotClassifier

    return WiSEHead(
        ZeroShotClassifier(class_embeddings="image_means"),
        probe=LogisticRegression(C=params["C"], max_iter=1000), alpha=params["alpha"],
    )  # fmt: skip


def _c_grid(axes):
    return grid_product(C=axes["C"])


def _cali_probe_grid(axes):
    return grid_product(calibration_strength=CALIBRATION_STRENGTHS, C=axes["C"])


def _wise_grid(axes):
    return grid_product(alpha=WISE_ALPHAS, C=axes["C"])


_TEXT_BASELINES = (
    # name, transformer, grid of the zero-shot column, source
    ("Orth-Proj", _orth_proj, {}, "biased prompts of the spurious attribute projected out"),
    ("Orth-Cali", _orth_cali, {"calibration_strength": CALIBRATION_STRENGTHS},
     "Orth-Proj calibrated by (class, attribute) prompt pairs"),
    ("PRISM-mini", _prism_mini, {}, "normalised embeddings, attribute descriptions projected out"),
    ("RoboShot", _roboshot, {}, "harmful insights (attribute pairs) rejected"),
)  # fmt: skip


def _baseline_entries():
    entries = []
    for name, transformer, zero_shot_grid, what in _TEXT_BASELINES:
        probe_grid = _cali_probe_grid if name == "Orth-Cali" else _c_grid
        entries.append(
            Method(
                f"zero-shot {name}", _zero_shot_with(transformer), grid=zero_shot_grid,
                needs=("text tower", "class names"), zero_shot=True, default=False,
                description=f"zero-shot, {what}",
            )
        )  # fmt: skip
        entries.append(
            Method(
                f"linear probe {name}", _then_probe(transformer), grid=probe_grid,
                needs=("text tower",), default=False,
                description=f"the linear probe after {name}: {what}",
            )
        )  # fmt: skip
    entries.extend(
        [
            Method(
                "LEACE", _leace, grid=_c_grid, needs=("groups",), fit_params=("groups",),
                default=False,
                description="the linear probe after LEACE erased the concept (groups)",
            ),
            Method(
                "DFR", _dfr, grid=_c_grid, needs=("groups",), fit_params=("groups",),
                default=False,
                description="the linear probe on (label, concept)-balanced subsamples, 10 "
                "fits averaged",
            ),
            Method(
                "WiSE", _wise, grid=_wise_grid, needs=("text tower", "class names"),
                default=False,
                description="zero-shot and linear-probe heads mixed (alpha searched)",
            ),
            Method(
                "WiSE (class means)", _wise_class_means, grid=_wise_grid, default=False,
                description="WiSE with the class-mean head standing in for zero-shot (no "
                "text tower)",
            ),
        ]
    )  # fmt: skip
    return entries


for _method in _baseline_entries():
    if _method.name not in available_methods():  # importing twice registers once
        register_method(_method)
    BASELINE_METHODS.append(_method.name)
del _method
