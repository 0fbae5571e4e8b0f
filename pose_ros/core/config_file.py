"""Read a JSON or YAML file the user wrote, turning every way it can be wrong into one error type.

Why: object.yaml, models_info.json, BOP scene files and retarget mappings are all user input; each
loader raises its own error class (MeshLoad/ModelInfo/BopFormat/Mapping errors) but the reading,
parsing and top-level check are the same, and their messages should name the file the same way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_config_file"]


def read_config_file(path: str | Path, error: type[Exception], missing: str | None = None,
                     mapping_expected: str | None = None) -> Any:
    """Parsed content of ``path`` (``.json`` as JSON, anything else as YAML).

    Raises ``error``: with ``missing`` (default "file not found: <path>") when the file is absent;
    naming the parse error; with ``"<path>: <mapping_expected>; got <type>"`` when
    ``mapping_expected`` is given and the top level is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise error(missing or f"file not found: {path}") from exc
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(f"{path}: not valid JSON ({exc})") from exc
    else:
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise error(f"{path}: invalid YAML ({exc})") from exc
    if mapping_expected is not None and not isinstance(raw, dict):
        raise error(f"{path}: {mapping_expected}; got {type(raw).__name__}")
    return raw
