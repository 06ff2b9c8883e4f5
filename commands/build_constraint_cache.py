"""Step `constraints`: select, check, uprate and sort the target rows; write the shared build state (dataset,
geography, targets, constraint cache) that `dispatch` and every chunk worker read."""

from __future__ import annotations

import argparse
import logging
from collections import Counter

from commands.errors import domain_errors
from commands.layout import RunLayout, write_json
from policyengine_us_data.pipeline.default_targets import default_targets_path
from policyengine_us_data.datasets.geography import CloneGeography
from policyengine_us_data.targets.target_db import read_database
from policyengine_us_data.targets.targets import TargetTable, check_geo_levels
from policyengine_us_data.errors import InputError
from policyengine_us_data.pipeline.state import select_targets, write_state
from runner import BaseCommand, BuildState

LOG = logging.getLogger(__name__)
DEFAULT_YEAR = 2024


def split_list(text: str | None, cast=str) -> list | None:
    """"a,b,c" -> [a, b, c]; None stays None (no filter)."""
    if not text:
        return None
    try:
        return [cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise InputError(f"cannot parse the list {text!r}: give comma-separated values") from None


class BuildConstraintCache(BaseCommand):
    """Read the target database and write the build state: the sorted targets, their constraint cache, and the
    dataset and geography of the `dataset` step, once, for every chunk."""

    params = ("db", "year", "target_variables", "geo_levels", "target_ids", "simulator", "skip_takeup_rerandomize")
    outputs = ("constraints", "state")  # the folders it writes (see BaseCommand.outputs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--db", default=None, metavar="PATH",
                            help="target database in upstream's schema (default: the embedded one)")
        parser.add_argument("--year", type=int, default=DEFAULT_YEAR, help="build year (default %(default)s)")
        parser.add_argument("--target-variables", default=None, metavar="V1,V2",
                            help="keep only targets on these variables")
        parser.add_argument("--geo-levels", default=None, metavar="L1,L2",
                            help="keep only these geo levels (national, state, district)")
        parser.add_argument("--target-ids", default=None, metavar="ID1,ID2", help="keep only these target ids")
        parser.add_argument("--simulator", default="policyengine", help=argparse.SUPPRESS)
        parser.add_argument("--skip-takeup-rerandomize", action=argparse.BooleanOptionalAction, default=False,
                            help="keep the dataset's take-up inputs instead of re-drawing them per clone")

    @classmethod
    def input_files(cls, args: argparse.Namespace) -> list[str]:
        """The target database (the user's, or the embedded one): editing it makes this step stale."""
        return [args.db or str(default_targets_path())]

    @staticmethod
    def select(args: argparse.Namespace) -> tuple[str, TargetTable]:
        """(database path, the selected and checked target rows); InputError when the database or filters are bad."""
        db = args.db or str(default_targets_path())
        return db, select_targets(db, args.year, simulator=args.simulator,
                                  variables=split_list(args.target_variables),
                                  geo_levels=split_list(args.geo_levels),
                                  target_ids=split_list(args.target_ids, int))

    @classmethod
    def precheck(cls, args: argparse.Namespace) -> None:
        """The filters and the database file itself, before policyengine-us is loaded for the variable checks."""
        with domain_errors():
            split_list(args.target_variables)
            split_list(args.target_ids, int)
            check_geo_levels(split_list(args.geo_levels))
            read_database(args.db or str(default_targets_path()))

    @classmethod
    def validate(cls, args: argparse.Namespace) -> None:
        """Read and check the database with the chosen filters before the runner touches the run directory."""
        with domain_errors():
            cls.select(args)

    def run(self, state: BuildState) -> None:
        args = self.args
        layout = RunLayout(state.run_dir)
        with domain_errors():
            db, table = self.select(args)
            meta = write_state(layout.state_dir, dataset=layout.dataset, geography=CloneGeography.load(layout.geography),
                               targets=table, year=args.year, rerandomize_takeup=not args.skip_takeup_rerandomize,
                               simulator=args.simulator)
        levels = Counter(row.geo_level for row in table.rows)
        write_json(layout.constraints_summary, {
            "db": db, "year": args.year, "simulator": args.simulator, "rows": len(table.rows),
            "rows_by_geo_level": dict(levels), "variables": sorted({row.variable for row in table.rows}),
            "groups": meta["constraint_groups"], "columns": meta["n_columns"],
        })
        LOG.info("constraints: %d target rows (%s), %d value groups; build state written",
                 len(table.rows), ", ".join(f"{k} {v}" for k, v in levels.items()), meta["constraint_groups"])
