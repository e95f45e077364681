"""The one CLI convention of every stage: argparse, known failures as one clear message + exit 1.

DVC runs each stage in its model's folder; `--params` is the model's params.yaml and
`--shared-params` the repository's root params.yaml merged under it (ml/config.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ml.catalog import CatalogError
from ml.config import ParamsError

SINGLE_STAGE_HINT = (
    "(run alone, e.g. `dvc repro -s`, this stage skipped the check stage and DVC removed its"
    " outputs before it ran: after fixing the params, `git checkout` the files `git status`"
    " lists as deleted and `dvc checkout <the model's dvc.yaml>` restores the rest, byte for"
    " byte; docs/PIPELINE.md)"
)


class StageError(RuntimeError):
    """A stage cannot do its work because of its input; the message says what and where."""


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="the model's params file (default: %(default)s)"
    )
    parser.add_argument(
        "--shared-params",
        default=None,
        help="the repository's shared params file merged under --params (e.g. ../../params.yaml)",
    )
    return parser


def add_catalog_options(parser: argparse.ArgumentParser) -> None:
    """Stages that talk to MLflow need to know which model of models.yaml they run for."""
    parser.add_argument("--catalog", required=True, help="the repository's models.yaml")
    parser.add_argument("--name", required=True, help="this model's name in the catalog")


def run_stage(
    name: str, body: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None
) -> int:
    """Run a stage body; known failures print `<stage>: error: ...` and return 1, no traceback."""
    try:
        body(argv)
    except ParamsError as error:
        # the check stage refuses bad params before DVC removes anything; a stage that meets
        # them itself was started alone (`dvc repro -s`), after DVC had removed its outputs
        hint = "" if name == "check" else f"\n{SINGLE_STAGE_HINT}"
        print(f"{name}: error: {error}{hint}", file=sys.stderr)
        return 1
    except (StageError, CatalogError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C: outputs are written atomically, so nothing half-written is left behind
        print(f"{name}: interrupted; nothing half-written (rerun `dvc repro`)", file=sys.stderr)
        return 130
    return 0
