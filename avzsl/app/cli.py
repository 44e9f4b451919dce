"""``avzsl``: every stage of the pipeline as a command, so each runs with or without Snakemake.

Each package owns its commands and their arguments (:mod:`extractors.cli`, :mod:`training.cli`, :mod:`bench.cli`);
this module joins them into one command with the options every command shares (``--quiet``, ``--threads``,
``--gpus``), and turns an expected failure into one line. A rule runs ``python -m avzsl <command>``: the command is
named as the rule, or the rule is ``<command>_<qualifier>`` (tests/test_rule_commands.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from bench import cli as bench_cli
from extractors import cli as extractors_cli
from training import cli as training_cli

PACKAGES = (extractors_cli, training_cli, bench_cli)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="avzsl", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Audio-visual (generalised) zero-shot video classification: every stage "
                                             "of the pipeline as a command.")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for tensor operations (0: torch's default); set to the job's share of cores")
    ap.add_argument("--gpus", type=int, default=None, metavar="K",
                    help="hold K GPUs of this machine's pool for the command's lifetime and set CUDA_VISIBLE_DEVICES "
                         "to them (0: hide every GPU); see avzsl/gpu_pool.py. Default: leave the devices as they are")
    sub = ap.add_subparsers(dest="command", required=True, metavar="<command>")
    groups = [(package.TITLE, package.add_commands(sub)) for package in PACKAGES]
    helps = {a.dest: a.help for a in sub._choices_actions}
    width = max(len(n) for _, names in groups for n in names) + 2
    sections = [f"{title}:\n" + "\n".join(f"  {n:<{width}}{helps.get(n, '')}" for n in names)
                for title, names in groups]
    ap.epilog = "\n\n".join(sections)
    return ap


def commands() -> dict[str, object]:
    """Every command by name, in the order of the help, with the function it runs."""
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p.get_default("func") for name, p in sub.choices.items()}


def _limit_threads(n: int) -> None:
    """Several jobs share a machine: more compute threads than cores makes OpenMP spin and every job crawl."""
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if args.gpus is not None:  # before torch (imported by _limit_threads and the commands) initialises CUDA
        from avzsl.gpu_pool import assign

        try:
            assign(args.gpus)
        except (ValueError, OSError) as e:
            raise SystemExit(f"avzsl {args.command}: error: {e}") from None
    if args.threads > 0:
        _limit_threads(args.threads)
    try:
        args.func(args)
    except (ValueError, OSError, KeyError) as e:
        # expected failures (bad input, a damaged or missing file, a budget that cannot fit): one line, no traceback
        message = " ".join(str(e).split()) or type(e).__name__
        raise SystemExit(f"avzsl {args.command}: error: {message}") from None


if __name__ == "__main__":
    main()
