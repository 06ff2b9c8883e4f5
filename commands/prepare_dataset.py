"""Step `dataset`: the base households (PolicyEngine h5) and a geography for every clone column."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict

from commands.errors import domain_errors
from commands.layout import RunLayout, write_json
from policyengine_us_data.datasets.geography import N_DISTRICTS
from policyengine_us_data.datasets.h5io import check_dataset
from policyengine_us_data.datasets.synthetic import DEFAULT_HOUSEHOLDS
from policyengine_us_data.errors import InputError
from policyengine_us_data.pipeline.dataset import prepare_dataset
from runner import BaseCommand, BuildState

LOG = logging.getLogger(__name__)
DEFAULT_N_CLONES = 3
DEFAULT_SEED = 0


def positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


MAX_HOUSEHOLDS = 10_000_000  # generated households beyond this exhaust memory long before the matrix
MAX_SEED = 2**63 - 1


def check_run_time_limits(args: argparse.Namespace) -> None:
    """What ``run`` would otherwise find only after the runner reset the directory (issue 10, case 2)."""
    if args.n_clones is not None and args.n_clones > N_DISTRICTS:
        raise InputError(f"--n-clones {args.n_clones} exceeds the {N_DISTRICTS} congressional districts "
                         f"(each clone of a household gets a distinct one); use at most {N_DISTRICTS}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise InputError(f"--seed must be between 0 and {MAX_SEED}, got {args.seed}")
    if not args.dataset and args.households is not None and args.households > MAX_HOUSEHOLDS:
        raise InputError(f"--households {args.households} is more than the {MAX_HOUSEHOLDS:,} the embedded "
                         f"generator can hold in memory; use fewer, or pass --dataset")


class PrepareDataset(BaseCommand):
    """Read (or generate) the household dataset, optionally subsample it, and assign clone geography."""

    params = ("dataset", "households", "target_households", "n_clones", "seed")
    outputs = ("dataset",)  # the folders it writes (see BaseCommand.outputs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dataset", default=None, metavar="PATH",
                            help="PolicyEngine h5 dataset (default: the embedded synthetic households)")
        parser.add_argument("--households", type=int, default=DEFAULT_HOUSEHOLDS,
                            help="households to generate for the embedded data (default %(default)s)")
        parser.add_argument("--target-households", type=int, default=None,
                            help="stratified subsample to this many households (production: 12000)")
        parser.add_argument("--n-clones", type=int, default=DEFAULT_N_CLONES,
                            help="geography clones per household (production: 430; default %(default)s)")
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for data, sampling and geography")

    @classmethod
    def input_files(cls, args: argparse.Namespace) -> list[str]:
        """The user's dataset: editing it in place makes this step stale."""
        return [args.dataset] if args.dataset else []

    @classmethod
    def precheck(cls, args: argparse.Namespace) -> None:
        """Refuse bad counts and a missing or invalid dataset before the runner touches the run directory
        (all cheap: no simulator is loaded)."""
        with domain_errors():
            for name in ("households", "target_households", "n_clones"):
                positive(name, getattr(args, name))
            check_run_time_limits(args)
            if args.dataset:
                check_dataset(args.dataset)  # streamed: bounded memory whatever the file declares

    def run(self, state: BuildState) -> None:
        args = self.args
        layout = RunLayout(state.run_dir)
        with domain_errors():
            for name in ("households", "target_households", "n_clones"):
                positive(name, getattr(args, name))
            summary = prepare_dataset(layout.dataset, layout.geography, source=args.dataset,
                                      households=args.households, target_households=args.target_households,
                                      n_clones=args.n_clones, seed=args.seed)
        write_json(layout.dataset_summary, asdict(summary))
        LOG.info("dataset: %d households, %d persons, %d clones -> %d columns",
                 summary.households, summary.persons, summary.n_clones, summary.columns)
