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


class _ResultFiles:
    """What the protocols' results share: :meth:`save` writes the three result files.

    A subclass has ``to_csv(path)``, ``to_markdown(title=)`` and ``plot(title=)``.
    """

    #: ``savefig``'s crop of ``results.png``: None keeps the figure as laid out (a
    #: constrained layout holds the legend); "tight" takes in a legend beside the axes.
    _png_bbox_inches = None

    def _spread(self, one_seed):
        """How the tables' cells summarise the seeds: ``mean ± std over 3 seeds (0, 1, 2)``,
        or with one seed ``one_seed`` (what the cells are then)."""
        listed = ", ".join(map(str, self.seeds))
        if len(self.seeds) == 1:
            return one_seed.format(seeds=listed)
        return f"mean ± std over {len(self.seeds)} seeds ({listed})"

    def _mean_std(self, mean, std):
        """A cell in %: the mean, and ``± std`` when there are several seeds."""
        text = f"{100 * mean:.1f}"
        return text + (f" ± {100 * std:.1f}" if len(self.seeds) > 1 else "")

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
            The files written: ``results.csv``, ``results.md``, ``results.png``.
        """
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = self.to_csv(folder / "results.csv")
        markdown_path = folder / "results.md"
        markdown_path.write_text(self.to_markdown(title=title))
        return [csv_path, markdown_path, self._save_plot(folder / "results.png", title=title)]

    def _save_plot(self, path, *, title=None):
        """Draw :meth:`plot` into the PNG file ``path`` (120 dpi), close it, return the path."""
        from skicm._matplotlib import pyplot

        figure = self.plot(title=title)
        figure.savefig(path, dpi=120, bbox_inches=self._png_bbox_inches)
        pyplot().close(figure)
        return Path(path)


def _use_file_backend(output, plot):
    """Before any work of ``skicm evaluate``: where ``--output`` or ``--plot`` will draw,
    matplotlib's file backend (Agg); a ValueError naming both options where matplotlib is
    missing."""
    if output is None and plot is None:
        return
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "--output and --plot draw results.png with matplotlib: pip install matplotlib "
            "(or skicm[plot])."
        ) from None
    matplotlib.use("Agg")


def _report_results(results, *, title, output=None, plot=None):
    """What ``skicm evaluate`` does with its results: print the tables, write the result
    files into the folder ``output`` and the plot into the file ``plot`` where given."""
    print(results.to_markdown(title=title))
    if output is not None:
        paths = results.save(output, title=title)
        print("written: " + ", ".join(str(path) for path in paths))
    if plot is not None:
        results._save_plot(plot, title=title)
        print(f"plot saved to {plot}")


@dataclass
class EvaluationResults(_ResultFiles):
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
    grids : dict of str to list of dict
        The candidates searched for each method (one dict of hyperparameters each, e.g.
        ``{"n_components": 4, "alpha": 1.0, "C": 1.0}``), listed in ``results.md``; empty
        when not recorded (``results.md`` then gives the number of candidates only).

    Examples
    --------
    >>> from skicm.evaluation import EvaluationResults
    >>> records = [
    ...     {"method": "probe", "test_domain": domain, "seed": 0, "classes": "all",
    ...      "accuracy": accuracy, "n_test": 10}
    ...     for domain, accuracy in [("photo", 0.0), ("sketch", 0.7)]
    ... ]
    >>> results = EvaluationResults(records, methods=["probe"], domains=["photo", "sketch"],
    ...                             selection="training-domain", scoring="accuracy",
    ...                             chance=0.5, grids={"probe": [{"C": 0.1}, {"C": 1.0}]})
    >>> table = [line for line in results.to_markdown().splitlines() if line.startswith("|")]
    >>> for line in table[:4]:
    ...     print(line)
    | method | photo | sketch | Average |
    |---|---:|---:|---:|
    | probe | 0.0 (0/10, 1 seed) | 70.0 (7/10, 1 seed) | 35.0 (1 seed) |
    | n_test | 10 | 10 | 20 |
    """

    records: list
    methods: list
    domains: list
    selection: str
    scoring: str
    chance: float
    notes: list = field(default_factory=list)
    protocol: str = "leave-one-domain-out"
    grids: dict = field(default_factory=dict)

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

    def _per_seed(self, method, domain, classes):
        """{seed: records} of one table cell (every held-out domain for ``domain=None``)."""
        per_seed = {}
        for record in self.records:
            if record["method"] != method or record["classes"] != classes:
                continue
            if domain is None or record["test_domain"] == domain:
                per_seed.setdefault(record["seed"], []).append(record)
        return per_seed

    def _cell(self, method, domain, classes):
        """One accuracy cell of ``results.md``: mean ± std over seeds, or one run said so.

        One seed has no spread: the cell says "1 seed" (and, for one held-out domain, the
        correct / test count) instead of a standard deviation of 0. A cell with fewer seeds
        than the table (an open-class split a seed's test rows lack) says how many.
        """
        mean, std = self.accuracy(method, domain, classes=classes)
        per_seed = self._per_seed(method, domain, classes)
        n_seeds, total = len(per_seed), len(self.seeds)
        text = f"{100 * mean:.1f}"
        if n_seeds > 1:
            text += f" ± {100 * std:.1f}"
        remarks = []
        if n_seeds == 1 and domain is not None:
            ((record, *others),) = per_seed.values()
            if not others and record.get("n_test") is not None:
                n_test = int(record["n_test"])
                remarks.append(f"{round(record['accuracy'] * n_test)}/{n_test}")
        if n_seeds < total:
            remarks.append(f"{n_seeds} of {total} seeds")
        elif n_seeds == 1:
            remarks.append("1 seed")
        return f"{text} ({', '.join(remarks)})" if remarks else text

    def _test_sizes(self, classes="all"):
        """{domain: sorted n_test over seeds}, and the same for all domains together (key
        None, summed per seed); empty where the records do not hold ``n_test``."""
        by_seed = {}
        for record in self.records:
            if record["classes"] == classes and record.get("n_test") is not None:
                key = (record["seed"], record["test_domain"])
                by_seed.setdefault(key, set()).add(int(record["n_test"]))
        if not by_seed:
            return {}
        sizes = {domain: set() for domain in self.domains}
        totals = {}
        for (seed, domain), values in by_seed.items():
            sizes.setdefault(domain, set()).update(values)
            totals[seed] = totals.get(seed, 0) + max(values)
        sizes[None] = set(totals.values())
        return {domain: sorted(values) for domain, values in sizes.items() if values}

    def _grid_axes(self, method):
        """{hyperparameter: searched values} of a method, in the order first met."""
        axes = {}
        for candidate in self.grids.get(method, ()):
            for key, value in candidate.items():
                values = axes.setdefault(key, [])
                if value not in values:
                    values.append(value)
        return axes

    def to_markdown(self, *, title=None):
        """DomainBed-style tables: accuracy (%) over seeds, test sizes, the grid and choices.

        Parameters
        ----------
        title : str or None, default=None
            A heading put first.

        Returns
        -------
        markdown : str
            The accuracy table (one row per method, one column per held-out domain and an
            ``Average`` column; mean ± std over seeds, or with one seed the value, the
            correct / test count and "1 seed"; a row ``n_test`` with the test images of each
            held-out domain), the selection rule in words, notes, the searched grid and a
            table of the hyperparameters chosen in each fold.
        """
        lines = [f"## {title}", ""] if title else []
        spread = self._spread(
            "from 1 seed ({seeds}), so without a standard deviation: a cell is one run, "
            "with its correct / test images"
        )
        lines.append(
            f"Accuracy (%) on each held-out domain, {spread}; model selection: "
            f"{self.selection_label}, scored by {self.scoring}. Chance: {100 * self.chance:.1f}."
        )
        lines.append("")
        header = ["method", *self.domains, "Average"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        rows = self._rows()
        for label, method, split in rows:
            cells = [self._cell(method, domain, split) for domain in [*self.domains, None]]
            lines.append("| " + " | ".join([label, *cells]) + " |")
        smallest = None
        for split in dict.fromkeys(split for _, _, split in rows):
            sizes = self._test_sizes(split)
            if not sizes:
                continue
            label = "n_test" if split == "all" else f"n_test [{split} classes]"
            cells = [_size_range(sizes.get(domain, [])) for domain in [*self.domains, None]]
            lines.append("| " + " | ".join([label, *cells]) + " |")
            for domain in self.domains:
                if sizes.get(domain) and (smallest is None or sizes[domain][0] < smallest[1]):
                    smallest = (domain, sizes[domain][0])
        if smallest is not None and smallest[1] > 0:
            domain, n_test = smallest
            lines.extend(
                [
                    "",
                    "n_test: the test images of each held-out domain (Average: all of them). "
                    f"One image is {100 / n_test:.1f} points of accuracy on {domain} "
                    f"({n_test} test images).",
                ]
            )
        for note in self.notes:
            lines.extend(["", f"Note: {note}"])
        lines.extend(self._grid_lines())
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
                if not chosen or all((r.get("n_candidates") or 1) <= 1 for r in chosen):
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

    def _grid_lines(self):
        """The searched grid of each method (or its number of candidates, where the grid was
        not recorded)."""
        counts = {}
        for record in self.records:
            if record.get("n_candidates") is not None:
                counts[record["method"]] = max(
                    counts.get(record["method"], 0), int(record["n_candidates"])
                )
        lines = ["", f"Searched grid ({self.selection_label} chose one candidate per held-out "
                 "domain and seed; a single candidate is used as it is):", ""]  # fmt: skip
        if not self.grids:
            lines.extend(["| method | candidates |", "|---|---:|"])
            lines.extend(f"| {method} | {counts.get(method, '?')} |" for method in self.methods)
            lines.extend(["", "The values of the grid were not recorded."])
            return lines
        axes = {method: self._grid_axes(method) for method in self.methods}
        names = list(dict.fromkeys(key for method in self.methods for key in axes[method]))
        known = ("n_components", "alpha", "C")  # the order of the chosen-values table
        names = [n for n in known if n in names] + [n for n in names if n not in known]
        lines.append("| " + " | ".join(["method", "candidates", *names]) + " |")
        lines.append("|" + "|".join(["---", "---:"] + ["---"] * len(names)) + "|")
        for method in self.methods:
            candidates = len(self.grids.get(method, ()))
            values = [
                ", ".join(_csv_value(v) for v in axes[method][name])
                if name in axes[method]
                else "-"
                for name in names
            ]
            lines.append("| " + " | ".join([method, str(candidates), *values]) + " |")
        return lines

    def plot(self, *, ax=None, title=None):
        """Per-domain bars (mean over seeds, std as error bars) with value labels and chance.

        Each domain is labelled with its number of test images, the title with the selection
        rule and the number of seeds (one seed: no error bars).

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; None creates a new figure.
        title : str or None, default=None
            Axes title, followed by a line naming the selection rule (which says when it is
            the test-domain oracle) and the seeds; None names the protocol.

        Returns
        -------
        figure : matplotlib.figure.Figure
        """
        from skicm.evaluation._plots import plot_domain_scores

        selection = f"selection: {self.selection}"
        if self.selection == "oracle":
            selection += " (test-domain oracle)"
        seeds = self.seeds
        if len(seeds) == 1:
            selection += f"; 1 seed ({seeds[0]}), no error bars"
        else:
            selection += f"; mean ± std over {len(seeds)} seeds"
        title = f"{self.protocol}; {selection}" if title is None else f"{title}\n{selection}"
        return plot_domain_scores(self, ax=ax, title=title)


def _joined(records, value):
    """One entry per seed, or a dash where the method has no such hyperparameter."""
    values = [value(record) for record in records]
    if all(v is None for v in values):
        return "-"
    return "; ".join(_csv_value(v) for v in values)


def _size_range(sizes):
    """A test size, or its range where it changes with the seed; "-" where unknown."""
    if not sizes:
        return "-"
    return str(sizes[0]) if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
