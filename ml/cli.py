"""The one CLI convention of every stage: argparse, known failures as one clear message + exit 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ml.config import ParamsError


class StageError(RuntimeError):
    """A stage cannot do its work because of its input; the message says what and where."""


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    return parser


def run_stage(
    name: str, body: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None
) -> int:
    """Run a stage body; known failures print `<stage>: error: ...` and return 1, no traceback."""
    try:
        body(argv)
    except (StageError, ParamsError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 1
    return 0
