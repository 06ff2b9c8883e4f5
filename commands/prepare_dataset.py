"""Step `dataset`: the base households (PolicyEngine h5) and a geography for every clone column."""

from __future__ import annotations

import argparse
import logging

from commands.errors import domain_errors
from commands.layout import RunLayout, write_json
from policyengine_us_data.calibration.geography import assign_geography
from policyengine_us_data.datasets.h5io import read_dataset, write_dataset
from policyengine_us_data.datasets.stratify import stratified_subsample
from policyengine_us_data.datasets.synthetic import DEFAULT_HOUSEHOLDS, generate_synthetic
from policyengine_us_data.errors import InputError
from runner import BaseCommand, BuildState

LOG = logging.getLogger(__name__)
DEFAULT_N_CLONES = 3
DEFAULT_SEED = 0


def positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


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
    def validate(cls, args: argparse.Namespace) -> None:
        """Refuse bad counts and a missing or invalid dataset before the runner touches the run directory."""
        with domain_errors():
            for name in ("households", "target_households", "n_clones"):
                positive(name, getattr(args, name))
            if args.dataset:
                read_dataset(args.dataset)

    def run(self, state: BuildState) -> None:
        args = self.args
        layout = RunLayout(state.run_dir)
        with domain_errors():
            for name in ("households", "target_households", "n_clones"):
                positive(name, getattr(args, name))
            if args.dataset:
                data = read_dataset(args.dataset)
            else:
                data = generate_synthetic(args.households, seed=args.seed)
            if args.target_households:
                data = stratified_subsample(data, args.target_households, seed=args.seed or 3526)
            geography = assign_geography(data.n_households, args.n_clones, seed=args.seed)
            write_dataset(layout.dataset, data)
            geography.save(layout.geography)
        summary = {
            "source": args.dataset or "embedded synthetic",
            "households": data.n_households,
            "persons": data.n_persons,
            "n_clones": args.n_clones,
            "columns": data.n_households * args.n_clones,
            "period": data.period,
        }
        write_json(layout.dataset_summary, summary)
        LOG.info("dataset: %d households, %d persons, %d clones -> %d columns",
                 data.n_households, data.n_persons, args.n_clones, summary["columns"])
