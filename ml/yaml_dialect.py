"""The YAML dialect of the pipeline's own files (params, models.yaml): DVC's, read the way DVC
reads them, so a stage never sees a value other than the one DVC recorded in `dvc.lock`.

DVC parses params with ruamel.yaml's safe loader, which speaks YAML 1.2: `3e-3` is the float
0.003, `yes`/`on` are strings, `1:30` is a string, `017` is 17 and a repeated key is an error.
PyYAML speaks YAML 1.1 and reads `3e-3` as the string '3e-3', `yes` as True and `1:30` as 90,
so a stage reading with PyYAML would disagree with the lock about the same line of text. Every
reader of those files goes through `parse` (tests/unit/test_yaml_dialect.py checks it against
DVC's own parser on the cases where the two dialects differ).

`locate` maps a key path to its line and column for messages; it re-reads the text with the
round-trip loader, which keeps positions, only when a message needs one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class YamlError(ValueError):
    """The text is not YAML DVC would accept; the message carries line and column."""


def parse(text: str) -> Any:
    """Parse like DVC (`dvc.utils.serialize.parse_yaml`): ruamel.yaml, typ="safe", YAML 1.2."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = error.problem or error.context or "invalid YAML"
        raise YamlError(f"{where}{problem}") from None
    except YAMLError as error:  # e.g. a duplicate key (DVC refuses those too)
        raise YamlError(str(error).strip().splitlines()[0]) from None


def locate(text: str, keys: Sequence[str | int]) -> tuple[int, int] | None:
    """(line, column), 1-based, of the deepest existing key of `keys` in the YAML text; None when
    not even the first key exists or the text does not parse."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        node = YAML(typ="rt", pure=True).load(text)
    except YAMLError:
        return None
    found: tuple[int, int] | None = None
    for key in keys:
        position = None
        if isinstance(node, dict) and key in node:
            position = node.lc.key(key) if hasattr(node, "lc") else None
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            position = node.lc.item(key) if hasattr(node, "lc") else None
            node = node[key]
        else:
            break
        if position is not None:
            found = (int(position[0]) + 1, int(position[1]) + 1)
    return found
