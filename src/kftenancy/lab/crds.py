"""The CRDs a local cluster gets: the third-party kinds kftenancy reads or writes
(`src/kftenancy/data/crds/thirdparty/*.yaml`) and kftenancy's own
(`kftenancy.crds.all_crds()`, once that module exists)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

import kftenancy

THIRD_PARTY_DIR = Path(kftenancy.__file__).parent / "data" / "crds" / "thirdparty"


def third_party_crds(directory: Path = THIRD_PARTY_DIR) -> list[dict[str, Any]]:
    """Every document in `directory/*.yaml`, in file order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def own_crds() -> list[dict[str, Any]]:
    """kftenancy's own CRDs; empty only while the `kftenancy.crds` module does not exist
    (any other import error propagates)."""
    try:
        module = importlib.import_module("kftenancy.crds")
    except ModuleNotFoundError as err:
        if err.name == "kftenancy.crds":
            return []
        raise
    return [c if isinstance(c, dict) else c.to_dict() for c in module.all_crds()]


def bundled_crds() -> list[dict[str, Any]]:
    return [*third_party_crds(), *own_crds()]
