"""What `shopdesk train recsys` and `shopdesk eval recsys` run (shopdesk/cli.py only parses options).

Progress goes to stderr, so `--json` output on stdout stays one clean JSON object.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recsys.train import Progress as ProgressFn
from shopdesk.settings import Settings


class CommandError(RuntimeError):
    """Bad input: the message is printed as is and the command exits with code 2."""


@contextmanager
def progress_bar(err: Console, title: str) -> Iterator[ProgressFn]:
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(title, total=None)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{title}: {what}")

        yield update


def run_eval(
    out: Console,
    err: Console,
    interactions: Path,
    items: Path | None,
    split_kind: str,
    k: int,
    as_json: bool,
    seed: int = 0,
) -> None:
    from recsys.data import InteractionFileError, load_interactions_csv, load_item_texts
    from recsys.eval import embed_item_texts, evaluate
    from recsys.matrix import Index
    from recsys.metrics import RECALL_K
    from recsys.split import SPLITS, SplitError

    if split_kind not in SPLITS:
        raise CommandError(f"unknown split {split_kind!r}: choose one of {', '.join(SPLITS)}")
    try:
        inter = load_interactions_csv(interactions)
        texts = load_item_texts(items) if items is not None else None
    except (InteractionFileError, FileNotFoundError, UnicodeDecodeError) as exc:
        raise CommandError(str(exc)) from exc
    if inter.dropped_zero_weight:
        err.print(f"[yellow]note:[/] {inter.dropped_zero_weight} rows of weight 0 ignored")
    index = Index.of(inter)
    vectors = None
    if texts is not None:
        missing = sum(1 for i in index.item_ids.tolist() if not texts.get(i, "").strip())
        if missing:
            err.print(
                f"[yellow]note:[/] {missing} of {index.n_items} items have no text (content skips them)"
            )
        with progress_bar(err, "embedding item texts") as update:
            update(0, 1, f"{index.n_items - missing} texts")
            vectors = embed_item_texts(index, texts)
    with progress_bar(err, "evaluating") as update:
        try:
            result = evaluate(
                inter, split_kind, k=k, item_vectors=vectors, index=index, seed=seed, progress=update
            )
        except SplitError as exc:
            raise CommandError(str(exc)) from exc
    for name, why in result.skipped.items():
        err.print(f"[yellow]note:[/] {name} skipped: {why}")
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        return
    table = Table(
        title=(
            f"recsys on {interactions.name}: {result.n_users:,} users, {result.n_items:,} items, "
            f"{result.n_interactions:,} interactions; {split_kind} split, {result.n_test_users:,} test users"
        )
    )
    for column in ("model", f"NDCG@{k}", f"Recall@{RECALL_K}", "coverage", "chosen on validation"):
        table.add_column(column, justify="left" if column in ("model", "chosen on validation") else "right")
    for name, values in result.metrics.items():
        chosen = result.weights if name == "hybrid" else result.params.get(name, {})
        table.add_row(
            f"[bold]{name}[/]" if name == "hybrid" else name,
            f"{values[f'ndcg@{k}']:.4f}",
            f"{values[f'recall@{RECALL_K}']:.4f}",
            f"{values['coverage']:.3f}",
            ", ".join(f"{a}={b}" for a, b in chosen.items()),
        )
    out.print(table)
    seen = "skipped" if result.exclude_seen else "kept (the data has repeat purchases)"
    out.print(f"users' training items in rankings: {seen}; {result.seconds:.1f} s", highlight=False)


def run_train(out: Console, err: Console, settings: Settings, content: bool, as_json: bool) -> None:
    from recsys.store import train_store
    from shopdesk.db import get_engine

    with progress_bar(err, "training recsys") as update:
        report = train_store(get_engine(settings), settings, content=content, progress=update)
    bundle = report.bundle
    summary = {
        "version": report.version,
        "path": str(report.path),
        "n_customers": report.n_customers,
        "n_variants": report.n_variants,
        "n_interactions": report.n_interactions,
        "weights": bundle.weights,
        "validation": bundle.validation,
        "skipped": bundle.skipped,
        "seconds": round(report.seconds, 1),
    }
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    out.print(
        f"recsys {report.version}: {report.n_customers} customers x {report.n_variants} variants, "
        f"{report.n_interactions} order items; {report.seconds:.1f} s -> {report.path}",
        highlight=False,
    )
    if bundle.validation:
        table = Table(title="validation (each customer's last basket)")
        for column in ("model", "NDCG@10", "Recall@20"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for name, values in bundle.validation.items():
            table.add_row(name, f"{values['ndcg@10']:.4f}", f"{values['recall@20']:.4f}")
        out.print(table)
    else:
        out.print("too few orders for a validation split: default parameters and weights")
    out.print("hybrid weights: " + ", ".join(f"{n}={w}" for n, w in bundle.weights.items()), highlight=False)
    for name, why in bundle.skipped.items():
        out.print(f"{name} skipped: {why}", highlight=False)
