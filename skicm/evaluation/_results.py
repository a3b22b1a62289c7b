"""The results of a protocol run: records, ``results.csv``, ``results.md`` and ``results.png``."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_SELECTION_LABELS = {
    "training-domain": "training-domain validation",
    "leave-one-domain-out": "leave-one-domain-out validation over the training domains",
    "oracle": "test-domain validation (oracle: the held-out domain chose the hyperparameters; "
    "an upper bound, not a domain-generalisation result)",
}
#: Rows written in ``results.csv``, in this order.
RESULT_COLUMNS = (
    "method",
    "test_domain",
    "seed",
    "accuracy",
    "classes",
    "n_components",
    "n_components_fitted",
    "alpha",
    "C",
    "selection",
    "scoring",
    "validation_score",
    "n_candidates",
    "n_train",
    "n_test",
)


@dataclass
class EvaluationResults:
    """Results of :func:`evaluate_domain_generalization` or :func:`evaluate_open_class`.

    One record per method, held-out domain, seed (and, for the open-class protocol, class
    split) with the test accuracy and the hyperparameters the selection rule chose.

    Attributes
    ----------
    records : list of dict
        The rows of ``results.csv`` (keys :data:`RESULT_COLUMNS`).
    methods : list of str
        Method names, in column order.
    domains : list of str
        Held-out domains, in order.
    selection : str
        The model-selection rule (one of :data:`SELECTION_RULES`).
    scoring : str
        What the selection rule scored: ``"accuracy"``, ``"interventional"`` (the worse of
        accuracy on the validation rows and on their counterparts) or ``"worst-environment"``.
    chance : float
        Accuracy of guessing uniformly among the classes.
    notes : list of str
        What could not be run and why (e.g. no zero-shot columns without a text tower).
    protocol : str
        ``"leave-one-domain-out"`` or ``"open-class"``.
    """

    records: list
    methods: list
    domains: list
    selection: str
    scoring: str
    chance: float
    notes: list = field(default_factory=list)
    protocol: str = "leave-one-domain-out"

    @property
    def selection_label(self):
        """The selection rule in words, oracle selection labelled as such."""
        return _SELECTION_LABELS[self.selection]

    @property
    def seeds(self):
        """The seeds of the records, sorted."""
        return sorted({record["seed"] for record in self.records})

    def _rows(self):
        """(label, method, classes) of each table row."""
        splits = list(dict.fromkeys(record["classes"] for record in self.records))
        rows = []
        for method in self.methods:
            for split in splits:
                if any(r["method"] == method and r["classes"] == split for r in self.records):
                    label = method if split == "all" else f"{method} [{split} classes]"
                    rows.append((label, method, split))
        return rows

    def accuracy(self, method, domain=None, *, classes="all"):
        """Mean and standard deviation over seeds of one method's accuracy.

        Parameters
        ----------
        method : str
            A name of :attr:`methods`.
        domain : str or None, default=None
            A held-out domain; None gives the average over held-out domains (computed per seed,
            then averaged over seeds, as DomainBed does).
        classes : {"all", "base", "new"}, default="all"
            The class split (the open-class protocol reports base and new classes apart).

        Returns
        -------
        mean, std : float
            Over seeds (``std`` is 0 for one seed).
        """
        if method not in self.methods:
            raise ValueError(f"method {method!r} is not one of {self.methods}.")
        per_seed = {}
        for record in self.records:
            if record["method"] != method or record["classes"] != classes:
                continue
            if domain is None or record["test_domain"] == domain:
                per_seed.setdefault(record["seed"], []).append(record["accuracy"])
        if not per_seed:
            raise ValueError(
                f"no result for method {method!r}, domain {domain!r}, classes {classes!r}."
            )
        values = np.array([np.mean(v) for v in per_seed.values()])
        return float(values.mean()), float(values.std())

    def to_csv(self, path):
        """Write one row per method, held-out domain, seed (and class split).

        Parameters
        ----------
        path : str or path-like
            The CSV file to write.

        Returns
        -------
        path : pathlib.Path
        """
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
            writer.writeheader()
            for record in self.records:
                writer.writerow({key: _csv_value(record[key]) for key in RESULT_COLUMNS})
        return path

    def to_markdown(self, *, title=None):
        """DomainBed-style tables: accuracy (%) mean ± std over seeds, then the chosen values.

        Parameters
        ----------
        title : str or None, default=None
            A heading put first.

        Returns
        -------
        markdown : str
            The accuracy table (one row per method, one column per held-out domain and an
            ``Average`` column), the selection rule in words, notes, and a table of the
            hyperparameters chosen in each fold.
        """
        lines = [f"## {title}", ""] if title else []
        seeds = self.seeds
        lines.append(
            f"Accuracy (%) on each held-out domain, mean ± std over {len(seeds)} seed"
            f"{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}); model selection: "
            f"{self.selection_label}, scored by {self.scoring}. Chance: {100 * self.chance:.1f}."
        )
        lines.append("")
        header = ["method", *self.domains, "Average"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for label, method, split in self._rows():
            cells = [label]
            for domain in [*self.domains, None]:
                mean, std = self.accuracy(method, domain, classes=split)
                cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        for note in self.notes:
            lines.extend(["", f"Note: {note}"])
        lines.extend(["", "Chosen hyperparameters per held-out domain (one entry per seed):", ""])
        lines.append("| method | held-out domain | n_components (fitted) | alpha | C |")
        lines.append("|---|---|---|---|---|")
        for method in self.methods:
            for domain in self.domains:
                chosen = [
                    r
                    for r in self.records
                    if r["method"] == method and r["test_domain"] == domain
                    and r["classes"] in ("all", "base")
                ]  # fmt: skip
                if not chosen or all(r["n_candidates"] <= 1 for r in chosen):
                    continue
                n = _joined(
                    chosen,
                    lambda r: (
                        f"{r['n_components']} ({r['n_components_fitted']})"
                        if r["n_components"] is not None
                        else None
                    ),
                )
                alpha = _joined(chosen, lambda r: r["alpha"])
                c = _joined(chosen, lambda r: r["C"])
                lines.append(f"| {method} | {domain} | {n} | {alpha} | {c} |")
        return "\n".join(lines) + "\n"

    def plot(self, *, ax=None, title=None):
        """Per-domain bars (mean over seeds, std as error bars) with value labels and chance.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; None creates a new figure.
        title : str or None, default=None
            Axes title, followed by a line naming the selection rule (which says when it is
            the test-domain oracle); None names the protocol.

        Returns
        -------
        figure : matplotlib.figure.Figure
        """
        from skicm.evaluation._plots import plot_domain_scores

        selection = f"selection: {self.selection}"
        if self.selection == "oracle":
            selection += " (test-domain oracle)"
        title = f"{self.protocol}; {selection}" if title is None else f"{title}\n{selection}"
        return plot_domain_scores(self, ax=ax, title=title)

    def save(self, output_dir, *, title=None):
        """Write ``results.csv``, ``results.md`` and ``results.png`` (needs matplotlib).

        Parameters
        ----------
        output_dir : str or path-like
            Folder, created if needed.
        title : str or None, default=None
            Heading of ``results.md`` and title of the plot.

        Returns
        -------
        paths : list of pathlib.Path
            The files written.
        """
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = self.to_csv(folder / "results.csv")
        markdown_path = folder / "results.md"
        markdown_path.write_text(self.to_markdown(title=title))
        figure = self.plot(title=title)
        png_path = folder / "results.png"
        figure.savefig(png_path, dpi=120)
        import matplotlib.pyplot as plt

        plt.close(figure)
        return [csv_path, markdown_path, png_path]


def _joined(records, value):
    """One entry per seed, or a dash where the method has no such hyperparameter."""
    values = [value(record) for record in records]
    if all(v is None for v in values):
        return "-"
    return "; ".join(_csv_value(v) for v in values)


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
