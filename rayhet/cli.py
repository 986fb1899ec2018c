"""CLI: `rayhet plan | profile | status | simulate | calibrate | trace`; each subcommand lives in a module with add_arguments/run.

Only the chosen subcommand's module is imported, so `rayhet plan` never loads Ray or an engine. A module
that is not installed yet gives a clear message instead of an ImportError.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

from rayhet.errors import RayhetError

# subcommand -> (module exposing add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("rayhet.plan_command", "cheapest mix of pools for a workload, with single-pool baselines"),
    "profile": ("rayhet.profiler", "measure a pool's max rate per bucket under an SLO and write a profile"),
    "status": ("rayhet.serve.status", "show the running app's plan, replicas and traffic"),
    "simulate": ("rayhet.sim.command", "replay a trace through the real router, controller and planner: $ and SLO"),
    "calibrate": ("rayhet.sim.calibrate", "measure what a live app's serving stack adds to its pools' engine models"),
    "trace": ("rayhet.sim.trace_command", "write a reproducible trace (a diurnal day) in Azure format"),
}


def _not_installed(name: str, module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"rayhet {name}: not available in this installation ({module} is missing)", file=sys.stderr)
        return 2

    return run


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayhet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is None or not module_name.startswith(e.name):
                raise  # the module exists but one of its own imports failed: show that
            sp.set_defaults(_run=_not_installed(name, module_name))
            continue
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # `plan` reports dropped buckets once in its output instead of once per solve
        logging.getLogger("rayhet.planner").setLevel(logging.ERROR)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except RayhetError as e:
        print(f"rayhet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
