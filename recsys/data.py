"""Interactions on any data: one row per (user, item, timestamp, weight), read from CSV or from ML-100k.

The eval format is CSV with a header `user,item,timestamp[,weight]`. Ids are opaque strings.
Timestamps only have to be sortable; their kind is set by the first data row and every row must match:
numbers (epoch seconds, days, ...), ISO-8601 dates/datetimes (converted to epoch seconds), or any other
text (ordered as strings, then replaced by its rank). Weight defaults to 1; it must be a finite number
>= 0, and rows of weight 0 are dropped (kept out of every model). A malformed file raises
`InteractionFileError` naming the line.

MovieLens-100k ships inside the recbole 1.2.1 wheel (research-use data): `ml100k_dir()` finds it
through `importlib.util.find_spec` without importing recbole, and `write_ml100k_csv()` writes it in
the eval format (plus an optional item-text file for the content model). Never copy it into the repo.

    .venv/bin/python -m recsys.data /tmp/ml-100k   # writes interactions.csv and items.csv there
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HEADER = ("user", "item", "timestamp")
ITEMS_HEADER = ("item", "text")


class InteractionFileError(ValueError):
    """A malformed interactions (or items) file; names the line."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = Path(path), line


@dataclass
class Interactions:
    """Parallel arrays, one entry per interaction row. `timestamps` are float64 (see module doc)."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    timestamps: np.ndarray  # float64
    weights: np.ndarray  # float32
    timestamp_kind: str = "number"  # number | iso | text
    dropped_zero_weight: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows: np.ndarray) -> Interactions:
        return Interactions(
            self.users[rows],
            self.items[rows],
            self.timestamps[rows],
            self.weights[rows],
            self.timestamp_kind,
            0,
            dict(self.meta),
        )

    def data_hash(self) -> str:
        """SHA-256 over the rows in a canonical order: equal data gives an equal hash (artifact manifests)."""
        order = np.lexsort((self.weights, self.timestamps, self.items, self.users))
        h = hashlib.sha256()
        for arr in (self.users[order], self.items[order]):
            h.update("\x1f".join(arr.tolist()).encode())
            h.update(b"\x1e")
        h.update(np.ascontiguousarray(self.timestamps[order]).tobytes())
        h.update(np.ascontiguousarray(self.weights[order].astype(np.float32)).tobytes())
        return h.hexdigest()

    @classmethod
    def from_rows(
        cls,
        users: list[str],
        items: list[str],
        timestamps: list[float],
        weights: list[float] | None = None,
    ) -> Interactions:
        w = np.ones(len(users), np.float32) if weights is None else np.asarray(weights, np.float32)
        keep = w > 0
        return cls(
            np.asarray(users, dtype=str)[keep],
            np.asarray(items, dtype=str)[keep],
            np.asarray(timestamps, dtype=np.float64)[keep],
            w[keep],
            dropped_zero_weight=int((~keep).sum()),
        )


def _parse_iso(value: str) -> float | None:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _parse_number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def load_interactions_csv(path: str | Path) -> Interactions:
    """Read a `user,item,timestamp[,weight]` CSV. Raises FileNotFoundError or InteractionFileError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interactions file not found: {path}")
    users: list[str] = []
    items: list[str] = []
    raw_ts: list[str] = []
    weights: list[float] = []
    kind = ""
    ts: list[float] = []
    with path.open(encoding="utf-8-sig", errors="strict", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InteractionFileError(path, 1, f"cannot read the header ({exc})") from exc
        if header is None:
            raise InteractionFileError(path, 1, "empty file; expected a header user,item,timestamp[,weight]")
        names = tuple(h.strip().lower() for h in header)
        if names not in (HEADER, (*HEADER, "weight")):
            raise InteractionFileError(
                path, 1, f"header must be user,item,timestamp[,weight], got {','.join(header)!r}"
            )
        n_cols = len(names)
        line = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (UnicodeDecodeError, csv.Error) as exc:
                raise InteractionFileError(
                    path, reader.line_num or line + 1, f"unreadable row ({exc})"
                ) from exc
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            if len(row) != n_cols:
                raise InteractionFileError(path, line, f"expected {n_cols} fields, got {len(row)}")
            user, item, stamp = (c.strip() for c in row[:3])
            if not user or not item:
                raise InteractionFileError(path, line, "empty user or item")
            if not stamp:
                raise InteractionFileError(path, line, "empty timestamp")
            if not kind:  # the first row decides how timestamps are read
                if _parse_number(stamp) is not None:
                    kind = "number"
                else:
                    kind = "iso" if _parse_iso(stamp) is not None else "text"
            if kind == "number":
                value = _parse_number(stamp)
                if value is None:
                    raise InteractionFileError(
                        path, line, f"timestamp {stamp!r} is not a number (earlier rows have numbers)"
                    )
                ts.append(value)
            elif kind == "iso":
                value = _parse_iso(stamp)
                if value is None:
                    raise InteractionFileError(
                        path, line, f"timestamp {stamp!r} is not an ISO-8601 date (earlier rows have dates)"
                    )
                ts.append(value)
            else:
                raw_ts.append(stamp)
            weight = 1.0
            if n_cols == 4:
                parsed = _parse_number(row[3].strip())
                if parsed is None or parsed < 0:
                    raise InteractionFileError(
                        path, line, f"weight {row[3].strip()!r} must be a finite number >= 0"
                    )
                weight = parsed
            users.append(user)
            items.append(item)
            weights.append(weight)
    if not users:
        raise InteractionFileError(path, 0, "no interactions in the file (only a header)")
    if kind == "text":  # any sortable text: its rank stands in for the time
        uniq, inverse = np.unique(np.asarray(raw_ts, dtype=str), return_inverse=True)
        ts = inverse.astype(np.float64).tolist()
    out = Interactions.from_rows(users, items, ts, weights)
    out.timestamp_kind = kind
    out.meta["source"] = str(path)
    if not len(out):
        raise InteractionFileError(path, 0, "every row has weight 0: nothing to learn from")
    return out


def load_item_texts(path: str | Path) -> dict[str, str]:
    """Read an `item,text` CSV (item descriptions for the content model)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"items file not found: {path}")
    out: dict[str, str] = {}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != ITEMS_HEADER:
            raise InteractionFileError(path, 1, "header must be item,text")
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2 or not row[0].strip():
                raise InteractionFileError(path, reader.line_num, "expected two fields: item,text")
            out[row[0].strip()] = row[1].strip()
    return out


# ---- MovieLens-100k (from the recbole wheel) ---------------------------------------------------------


def ml100k_dir() -> Path | None:
    """recbole/dataset_example/ml-100k inside the installed package, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    return path if (path / "ml-100k.inter").is_file() else None


def _ml100k_file(name: str) -> Path:
    root = ml100k_dir()
    if root is None:
        raise FileNotFoundError(
            "MovieLens-100k not found: install it with `pip install --no-deps recbole==1.2.1`"
        )
    return root / name


def load_ml100k(min_rating: float | None = None) -> Interactions:
    """ML-100k as implicit feedback: every rating is one interaction of weight 1 (binarised), or only
    ratings >= min_rating. The benchmark setting is all ratings (min_rating=None)."""
    users, items, ts = [], [], []
    with _ml100k_file("ml-100k.inter").open(encoding="utf-8") as fh:
        next(fh)  # user_id:token item_id:token rating:float timestamp:float
        for line in fh:
            u, i, r, t = line.rstrip("\n").split("\t")
            if min_rating is not None and float(r) < min_rating:
                continue
            users.append(u)
            items.append(i)
            ts.append(float(t))
    out = Interactions.from_rows(users, items, ts)
    out.meta["source"] = "ml-100k"
    return out


def ml100k_item_texts() -> dict[str, str]:
    """Movie title, year and genres per item id: the text the content model embeds."""
    out = {}
    with _ml100k_file("ml-100k.item").open(encoding="latin-1") as fh:
        next(fh)  # item_id movie_title release_year class
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            item, title = parts[0], parts[1]
            year = parts[2] if len(parts) > 2 else ""
            genres = parts[3] if len(parts) > 3 else ""
            out[item] = f"{title} ({year}). {genres}".strip()
    return out


def write_interactions_csv(inter: Interactions, path: str | Path, with_weight: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*HEADER, "weight"] if with_weight else HEADER)
        for row in zip(inter.users, inter.items, inter.timestamps, inter.weights, strict=True):
            t = int(row[2]) if float(row[2]).is_integer() else row[2]
            w.writerow([row[0], row[1], t, f"{row[3]:g}"] if with_weight else [row[0], row[1], t])
    return path


def write_ml100k_csv(out_dir: str | Path, min_rating: float | None = None) -> tuple[Path, Path]:
    """Write ML-100k in the eval format: out_dir/interactions.csv (user,item,timestamp; binarised) and
    out_dir/items.csv (item,text) for `shopdesk eval recsys --interactions ... --items ...`."""
    out = Path(out_dir)
    inter = write_interactions_csv(load_ml100k(min_rating), out / "interactions.csv")
    items = out / "items.csv"
    with items.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ITEMS_HEADER)
        for item, text in ml100k_item_texts().items():
            w.writerow([item, text])
    return inter, items


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ml-100k")
    written = write_ml100k_csv(target)
    print("\n".join(str(p) for p in written))
