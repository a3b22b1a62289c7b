"""The ``skicm`` command: ``skicm demo`` and ``skicm evaluate``.

``skicm demo`` runs the Colored MNIST protocol of IRM on scikit-learn's digits (offline, in
seconds, no model weights); ``skicm evaluate ROOT`` scores CLIP + logistic regression with and
without the invariant projector, leaving one domain out at a time, on a DomainBed-layout folder.
Each subcommand lives in its own module of this package, with ``add_parser(subcommands)`` and
``run(args)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from skicm.cli import demo, embed, evaluate

__all__ = ["build_parser", "main"]

#: Subcommand modules, in the order ``skicm --help`` lists them.
SUBCOMMANDS = (demo, evaluate, embed)


def build_parser():
    """Return the :class:`argparse.ArgumentParser` of the ``skicm`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        The parser with one subcommand per module of ``skicm.cli`` (``demo``, ``evaluate``,
        ``embed``); :func:`main` runs what it parses.

    Examples
    --------
    >>> from skicm.cli import build_parser
    >>> args = build_parser().parse_args(["demo", "--fast"])
    >>> args.command, args.fast
    ('demo', True)
    """
    parser = argparse.ArgumentParser(
        prog="skicm",
        description="CLIP-ICM for scikit-learn: invariant projections of CLIP embeddings.",
    )
    from skicm import __version__

    parser.add_argument("--version", action="version", version=f"skicm {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subcommands)
    return parser


def _warning_printer(command):
    """Print warnings as ``skicm COMMAND: warning: message``, without Python's source line."""

    def show(message, category, filename, lineno, file=None, line=None):
        name = "" if category is UserWarning else f"{category.__name__}: "
        print(f"skicm {command}: warning: {name}{message}", file=file or sys.stderr)

    return show


def main(argv=None):
    """Run the ``skicm`` command line and return its exit status.

    Parameters
    ----------
    argv : list of str or None, default=None
        Arguments without the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success; 2 when no subcommand is given or the run meets a user error: a bad
        argument, a missing or unreadable file, weights that cannot be found or downloaded, a
        model that cannot be built (one message on stderr, never a traceback; set the
        environment variable ``SKICM_TRACEBACK=1`` to see it); 130 when interrupted. Warnings
        are printed as ``skicm COMMAND: warning: ...``. Arguments that argparse itself
        rejects exit with ``SystemExit(2)``, as usual.

    Examples
    --------
    >>> from skicm.cli import main
    >>> main(["demo", "--fast"])  # doctest: +ELLIPSIS
    Colored digits (IRM's Colored MNIST protocol on scikit-learn's 8x8 digits)
    ...
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(args.command)
            return args.run(args)
    except KeyboardInterrupt:
        print(f"skicm {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as error:
        if os.environ.get("SKICM_TRACEBACK"):
            raise
        # User errors (options, files, weights, offline downloads, models that do not build)
        # are answered with their message; the exception type says what kind of error it is.
        kind = "" if type(error) in (ValueError, OSError) else f"{type(error).__name__}: "
        print(f"skicm {args.command}: error: {kind}{error}", file=sys.stderr)
        return 2
