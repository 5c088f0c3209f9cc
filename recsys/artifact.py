"""Versioned recommendation artifacts on disk: a directory per training run, no pickles.

    <root>/                         settings.var_dir / "recsys" for the store
      LATEST                        the newest complete version's name (written last, atomically)
      20261122T231600123456Z-1a2b3c4d/
        manifest.json               format, version, created_at, data hash, models (params + state),
                                    hybrid weights, validation metrics, catalog size, ...
        arrays.npz                  item ids, item groups, and each model's arrays ("ease.B", ...)

A version is `<UTC time>-<first 8 hex of the data hash>`. The directory is written under a temporary
name and renamed into place, then LATEST is replaced, so a reader never sees half an artifact.
`np.load(..., allow_pickle=False)`: loading runs no code from the file. The newest `KEEP` versions
are kept, older ones deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys.matrix import Index
from recsys.models import MODELS, Model
from recsys.train import Bundle

FORMAT = 1
KEEP = 3
VERSION_RE = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}$")


class ArtifactError(RuntimeError):
    """Missing, unreadable or incompatible artifact."""


@dataclass
class Artifact:
    path: Path
    manifest: dict[str, Any]
    item_ids: np.ndarray
    item_groups: np.ndarray
    models: dict[str, Model]
    weights: dict[str, float]
    index: Index = field(init=False)

    def __post_init__(self) -> None:
        self.index = Index(np.zeros(0, str), self.item_ids)
        if not np.array_equal(self.index.item_ids, self.item_ids):
            raise ArtifactError(f"{self.path}: item ids are not sorted and unique")

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def nbytes(self) -> int:
        return int(
            self.item_ids.nbytes + self.item_groups.nbytes + sum(m.nbytes() for m in self.models.values())
        )


def save(
    root: str | Path,
    bundle: Bundle,
    index: Index,
    *,
    data_hash: str,
    item_groups: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a new version under `root` and point LATEST at it; returns its directory."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    version = f"{now:%Y%m%dT%H%M%S%f}Z-{data_hash[:8]}"
    groups = np.asarray(item_groups if item_groups is not None else index.item_ids, dtype=str)
    arrays: dict[str, np.ndarray] = {"item_ids": index.item_ids, "item_groups": groups}
    models: dict[str, Any] = {}
    for name, model in bundle.models.items():
        keys = []
        for key, arr in model.arrays().items():
            arrays[f"{name}.{key}"] = arr
            keys.append(key)
        models[name] = {"params": model.params, "state": model.state(), "arrays": keys}
    manifest = {
        "format": FORMAT,
        "version": version,
        "created_at": now.isoformat(),
        "data_hash": data_hash,
        "n_users": index.n_users,
        "n_items": index.n_items,
        "models": models,
        "hybrid": {"weights": bundle.weights, "exclude_seen": bundle.exclude_seen},
        "metrics": {"validation": bundle.validation},
        "tuned": bundle.tuned,
        "skipped": bundle.skipped,
        "fit_seconds": {k: round(v, 3) for k, v in bundle.fit_seconds.items()},
        **(meta or {}),
    }
    tmp = root / f".{version}.tmp"
    tmp.mkdir()
    try:
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json_default))
        final = root / version
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = root / ".LATEST.tmp"
    latest_tmp.write_text(version + "\n")
    os.replace(latest_tmp, root / "LATEST")
    _prune(root, keep=KEEP)
    return final


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def versions(root: str | Path) -> list[Path]:
    """Complete versions under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and VERSION_RE.match(p.name) and (p / "manifest.json").exists()
    )


def _prune(root: Path, keep: int) -> None:
    for old in versions(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest(root: str | Path) -> Path | None:
    """The version LATEST names (or, if that file is missing, the newest complete directory)."""
    root = Path(root)
    pointer = root / "LATEST"
    if pointer.exists():
        name = pointer.read_text().strip()
        if VERSION_RE.match(name) and (root / name / "manifest.json").exists():
            return root / name
    found = versions(root)
    return found[-1] if found else None


def load(path: str | Path) -> Artifact:
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read manifest.json ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise ArtifactError(
            f"{path}: artifact format {manifest.get('format')!r}, this code reads {FORMAT}: "
            "run `shopdesk train recsys`"
        )
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read arrays.npz ({exc})") from exc
    try:
        item_ids = arrays["item_ids"].astype(str)
        models: dict[str, Model] = {}
        for name, spec in manifest["models"].items():
            cls = MODELS.get(name)
            if cls is None:
                raise ArtifactError(f"{path}: unknown model {name!r}")
            own = {key: arrays[f"{name}.{key}"] for key in spec["arrays"]}
            models[name] = cls.restore(spec["params"], spec.get("state", {}), own, len(item_ids))
        return Artifact(
            path=path,
            manifest=manifest,
            item_ids=item_ids,
            item_groups=arrays["item_groups"].astype(str),
            models=models,
            weights={k: float(v) for k, v in manifest["hybrid"]["weights"].items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: incomplete or inconsistent artifact ({exc!r})") from exc
