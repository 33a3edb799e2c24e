"""The kwok stages a lab cluster runs: the cached defaults, with one change.

kwok's "fast" pod-complete stage finishes every Job pod as soon as it runs. Quota and
queue tests need Job pods that keep their GPUs, so a pod annotated
`kftenancy.dev/lab-keep-running` is left Running until it is deleted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

KEEP_RUNNING_ANNOTATION = "kftenancy.dev/lab-keep-running"


def lab_stages(defaults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for stage in defaults:
        if stage.get("metadata", {}).get("name") == "pod-complete":
            stage = yaml.safe_load(yaml.safe_dump(stage))
            stage["spec"]["selector"]["matchExpressions"].append(
                {
                    "key": f'.metadata.annotations["{KEEP_RUNNING_ANNOTATION}"]',
                    "operator": "DoesNotExist",
                }
            )
        out.append(stage)
    return out


def write_lab_stages(defaults_file: Path, target: Path) -> Path:
    docs = [d for d in yaml.safe_load_all(defaults_file.read_text()) if d]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump_all(lab_stages(docs), sort_keys=False))
    return target
