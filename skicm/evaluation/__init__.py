"""Domain-generalisation protocols: leave-one-domain-out, as in DomainBed and CLIP-ICM.

Two layers:

- :func:`leave_one_domain_out` scores one estimator with one split per held-out domain;
- :func:`evaluate_domain_generalization` (and :func:`evaluate_open_class`) is the whole
  protocol behind ``skicm evaluate``: features (embedded once, optionally kept in an on-disk
  store), every method as a column (zero-shot, zero-shot in the invariant subspace, linear
  probe, linear probe in the invariant subspace for each kind of interventional data), a
  hyperparameter grid chosen per held-out domain by a named model-selection rule, several
  seeds, and an :class:`EvaluationResults` that writes ``results.csv``, ``results.md`` and
  ``results.png``. The command line only parses its arguments and calls these functions, so
  Python code reproduces its numbers exactly.

The package, one concept a module: ``_domain_scores`` (one fixed estimator),
``_options`` (checks of the options, before any data is embedded), ``_features`` (data
preparation), ``_methods`` (the registry of methods), ``_selection`` (the scorings and model
selection per held-out domain), ``_protocol`` (the drivers), ``_results`` and ``_plots``
(the results and their plot), ``_groups`` (the spurious-correlation protocol) and ``_robustness``
(the ImageNet robustness protocol: train on ImageNet, score on its shifts).
"""

# Registers the baselines of skicm.baselines as methods (default=False: named, not run by
# methods='auto' of the leave-one-domain-out protocol).
from skicm.evaluation import _baseline_methods  # noqa: F401
from skicm.evaluation._domain_scores import (
    DomainScores,
    format_domain_scores,
    leave_one_domain_out,
)
from skicm.evaluation._features import FIELDS
from skicm.evaluation._groups import GROUP_SCORINGS, GroupResults, evaluate_spurious_groups
from skicm.evaluation._methods import (
    FIT_PARAMS,
    NEEDS,
    Method,
    MethodContext,
    available_methods,
    grid_product,
    make_linear_probe,
    register_method,
    unregister_method,
)
from skicm.evaluation._options import DEFAULT_GRID, INTERVENTION_KINDS, SELECTION_RULES
from skicm.evaluation._plots import plot_domain_scores
from skicm.evaluation._protocol import evaluate_domain_generalization, evaluate_open_class
from skicm.evaluation._results import RESULT_COLUMNS, EvaluationResults
from skicm.evaluation._robustness import (
    RobustnessResults,
    evaluate_robustness,
    plot_effective_robustness,
)
from skicm.evaluation._selection import SCORINGS, Scoring
from skicm.zero_shot import zero_shot_templates

__all__ = [
    "DEFAULT_GRID",
    "FIELDS",
    "FIT_PARAMS",
    "GROUP_SCORINGS",
    "INTERVENTION_KINDS",
    "NEEDS",
    "RESULT_COLUMNS",
    "SCORINGS",
    "SELECTION_RULES",
    "DomainScores",
    "EvaluationResults",
    "GroupResults",
    "Method",
    "MethodContext",
    "RobustnessResults",
    "Scoring",
    "available_methods",
    "evaluate_domain_generalization",
    "evaluate_open_class",
    "evaluate_robustness",
    "evaluate_spurious_groups",
    "format_domain_scores",
    "grid_product",
    "leave_one_domain_out",
    "make_linear_probe",
    "plot_domain_scores",
    "plot_effective_robustness",
    "register_method",
    "unregister_method",
    "zero_shot_templates",
]
