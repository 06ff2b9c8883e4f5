"""Turn the domain library's errors into the runner's: bad input exits 2, a failed step 1."""

from __future__ import annotations

import contextlib
from typing import Iterator

from policyengine_us_data.errors import ArtifactError, InputError
from runner import CommandError


@contextlib.contextmanager
def domain_errors() -> Iterator[None]:
    """Run a step body, reporting the library's expected errors as one clear message."""
    try:
        yield
    except InputError as exc:
        raise CommandError(str(exc), exit_code=2) from None
    except ArtifactError as exc:
        raise CommandError(f"damaged file: {exc}", exit_code=1) from None
