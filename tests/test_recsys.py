"""Recommendations (issue 6), the generic part: the CSV format, the matrix layer, splits, metrics,
each model on tiny synthetic data, hybrid tuning, artifacts and `shopdesk eval recsys`.

Store-backed training, serving and the REST endpoints are in test_recsys_store.py; MovieLens-100k
targets in test_recsys_ml100k.py (slow).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recsys import artifact
from recsys.data import InteractionFileError, Interactions, load_interactions_csv, load_item_texts
from recsys.eval import evaluate
from recsys.matrix import Index, build, history
from recsys.metrics import evaluate_scores, ndcg_recall, target, top_k
from recsys.models import (
    ALS,
    EASE,
    MODELS,
    BuyAgain,
    Content,
    Hybrid,
    ItemKNN,
    ItemKNNBM25,
    ModelSkipped,
    Popularity,
    zscore,
)
from recsys.split import SplitError, has_repeats, split
from recsys.train import fit_tuned, tune_weights
from shopdesk import cli

DAY = 86400.0


def rows(*triples: tuple) -> Interactions:
    users = [t[0] for t in triples]
    items = [t[1] for t in triples]
    ts = [float(t[2]) for t in triples]
    weights = [float(t[3]) if len(t) > 3 else 1.0 for t in triples]
    return Interactions.from_rows(users, items, ts, weights)


def co_purchase() -> Interactions:
    """30 users buy a+b together; 40 users buy c (the best seller); d and e sell now and then.
    A user who bought only `a` should be shown `b`; popularity alone would say `c`."""
    out = []
    for u in range(30):
        out += [(f"u{u}", "a", u), (f"u{u}", "b", u)]
    for u in range(20, 60):
        out.append((f"u{u}", "c", 100 + u))
    for u in range(40, 60, 2):
        out += [(f"u{u}", "d", 200 + u), (f"u{u + 1}", "e", 200 + u)]
    out.append(("probe", "a", 300))
    return rows(*out)


# ---- CSV format ------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "inter.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_reads_weights_iso_dates_and_skips_blank_lines(tmp_path):
    path = write(
        tmp_path,
        "user,item,timestamp,weight\nu1,i1,2024-01-02,2\n\nu1,i2,2024-01-03T10:00:00Z,1\nu2,i1,2024-01-01,0\n",
    )
    inter = load_interactions_csv(path)
    assert inter.users.tolist() == ["u1", "u1"] and inter.items.tolist() == ["i1", "i2"]
    assert inter.timestamp_kind == "iso" and inter.dropped_zero_weight == 1
    assert inter.weights.tolist() == [2.0, 1.0]
    assert inter.timestamps[1] - inter.timestamps[0] == pytest.approx(DAY + 10 * 3600)


def test_csv_text_timestamps_are_ordered_as_text(tmp_path):
    inter = load_interactions_csv(write(tmp_path, "User, Item ,TIMESTAMP\na,x,w03\na,y,w01\nb,x,w02\n"))
    assert inter.timestamp_kind == "text"
    assert inter.timestamps.tolist() == [2.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("", 1, "empty file"),
        ("user,item\nu,i\n", 1, "header must be user,item,timestamp[,weight]"),
        ("user,item,timestamp\n", 0, "no interactions"),
        ("user,item,timestamp\nu,i,1\nu,j\n", 3, "expected 3 fields, got 2"),
        ("user,item,timestamp\nu,i,1\n,j,2\n", 3, "empty user or item"),
        ("user,item,timestamp\nu,i,1\nu,j,\n", 3, "empty timestamp"),
        ("user,item,timestamp\nu,i,1\nu,j,2\nu,k,yesterday\n", 4, "'yesterday' is not a number"),
        ("user,item,timestamp\nu,i,2024-01-01\nu,j,5\n", 3, "not an ISO-8601 date"),
        ("user,item,timestamp,weight\nu,i,1,1\nu,j,2,-1\n", 3, "weight '-1' must be a finite number >= 0"),
        ("user,item,timestamp,weight\nu,i,1,lots\n", 2, "weight 'lots'"),
        ("user,item,timestamp,weight\nu,i,1,nan\n", 2, "weight 'nan'"),
        ("user,item,timestamp,weight\nu,i,1,0\n", 0, "every row has weight 0"),
    ],
)
def test_csv_errors_name_the_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(InteractionFileError) as info:
        load_interactions_csv(path)
    assert info.value.line == line
    assert message in str(info.value)
    if line:
        assert f"line {line}:" in str(info.value)


def test_csv_missing_file_and_item_texts(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_interactions_csv(tmp_path / "nope.csv")
    texts = load_item_texts(write(tmp_path, 'item,text\n1,"Toy Story, 1995"\n2,Heat\n', "items.csv"))
    assert texts == {"1": "Toy Story, 1995", "2": "Heat"}
    with pytest.raises(InteractionFileError, match="line 3"):
        load_item_texts(write(tmp_path, "item,text\n1,a\n2\n", "bad.csv"))


# ---- matrix layer ----------------------------------------------------------------------------------


def test_matrix_sums_repeats_and_keeps_the_newest_time():
    inter = rows(("u1", "x", 5), ("u1", "x", 9, 2), ("u2", "y", 1), ("u1", "y", 3))
    index = Index.of(inter, extra_items=["z"])
    m = build(inter, index)
    assert index.item_ids.tolist() == ["x", "y", "z"] and m.shape == (2, 3)
    assert m.X.toarray().tolist() == [[3.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    assert m.last.toarray().tolist() == [[9.0, 3.0, 0.0], [0.0, 1.0, 0.0]]
    assert m.t_now == 9 and m.t_span == 8
    with pytest.raises(KeyError):
        index.codes(rows(("u3", "x", 1)))
    h = history(index, ["x", "ghost", "x"], [1.0, 2.0, 4.0], [1.0, 1.0, 1.0], t_now=10.0)
    assert h.X.toarray().tolist() == [[2.0, 0.0, 0.0]] and h.last.toarray()[0, 0] == 4.0


# ---- splits ----------------------------------------------------------------------------------------


def test_random_split_holds_out_a_fifth_of_each_users_items():
    inter = rows(*[(f"u{u}", f"i{i}", i) for u in range(20) for i in range(10)], ("lonely", "i1", 1))
    s = split(inter, "random", seed=3)
    assert s.exclude_seen
    test_users = inter.users[s.test]
    assert all((test_users == f"u{u}").sum() == 2 for u in range(20))
    assert "lonely" not in set(test_users.tolist())
    assert np.array_equal(s.test, split(inter, "random", seed=3).test)
    assert not np.array_equal(s.test, split(inter, "random", seed=4).test)


def test_random_split_never_splits_a_pair():
    inter = rows(*[("u", f"i{i % 5}", i) for i in range(20)])  # each item bought 4 times
    s = split(inter, "random", seed=0)
    train_pairs = set(inter.items[s.train].tolist())
    assert not train_pairs & set(inter.items[s.test].tolist())
    assert len(s.test) == 4  # one of five items, all four of its rows


def test_time_split_tests_on_the_newest_rows_and_keeps_ties_in_training():
    inter = rows(*[(f"u{i % 3}", f"i{i}", i) for i in range(10)], ("u0", "late", 7))
    s = split(inter, "time")
    assert inter.timestamps[s.train].max() <= inter.timestamps[s.test].min()
    assert sorted(inter.timestamps[s.test].tolist()) == [8.0, 9.0]  # the cutoff timestamp 7 stays in train
    assert "late" in inter.items[s.train].tolist()
    with pytest.raises(SplitError):
        split(rows(("u", "a", 1), ("v", "b", 1)), "time")


def test_last_basket_split_takes_every_row_of_each_users_newest_time():
    inter = rows(
        ("u1", "a", 1), ("u1", "b", 5), ("u1", "c", 5), ("u2", "a", 2), ("u3", "x", 3), ("u3", "y", 3)
    )
    s = split(inter, "last-basket")
    assert sorted(zip(inter.users[s.test].tolist(), inter.items[s.test].tolist(), strict=True)) == [
        ("u1", "b"),
        ("u1", "c"),
    ]  # u2 has one basket, u3 one timestamp: both stay in training
    assert s.exclude_seen  # no pair repeats
    repeat = rows(("u1", "a", 1), ("u1", "a", 5), ("u2", "b", 2), ("u2", "c", 3))
    assert has_repeats(repeat) and not split(repeat, "last-basket").exclude_seen
    assert split(repeat, "random").exclude_seen
    with pytest.raises(SplitError, match="unknown split"):
        split(repeat, "leave-one-out")


# ---- metrics ---------------------------------------------------------------------------------------


def test_ndcg_recall_and_top_k_by_hand():
    import scipy.sparse as sp

    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.4, 0.3, 0.2, 0.1]], np.float32)
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0]]))
    top = top_k(scores, 3, exclude)
    assert top.tolist() == [[2, 3, 0], [0, 1, 2]]
    truth = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 1]]))
    ndcg, recall = ndcg_recall(top, truth, k=2, recall_k=2)
    assert ndcg[0] == 0.0 and recall[0] == 0.0
    assert ndcg[1] == pytest.approx(1.0) and recall[1] == 1.0  # 2 hits of min(2, 3) relevant
    ndcg3, _ = ndcg_recall(top, truth, k=3, recall_k=3)
    assert ndcg3[0] == pytest.approx((1 / np.log2(4)) / 1.0)


def test_evaluate_scores_counts_users_with_history_and_coverage():
    train = build(
        rows(("u1", "a", 1), ("u2", "b", 1)), Index(np.array(["u1", "u2", "u3"]), np.array(["a", "b", "c"]))
    )
    test = build(rows(("u1", "c", 2), ("u3", "a", 2)), train.index)
    t = target(train, test, exclude_seen=True)
    assert t.users.tolist() == [0]  # u2 has nothing to find, u3 no history
    result = evaluate_scores(lambda r: np.array([[0.0, 1.0, 2.0]] * len(r)), t, 3, k=1, recall_k=1)
    assert result == {"ndcg@1": 1.0, "recall@1": 1.0, "coverage": pytest.approx(1 / 3)}


# ---- models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop():
    inter = co_purchase()
    index = Index.of(inter)
    m = build(inter, index)
    probe = m.rows(np.array([index.user_pos["probe"]]))
    return index, m, probe


def best_unseen(index, scores: np.ndarray, seen: set[str]) -> str:
    order = np.argsort(-scores, kind="stable")
    return next(index.item_ids[i] for i in order if index.item_ids[i] not in seen)


@pytest.mark.parametrize(
    "model",
    [EASE(l2=10.0), ItemKNN(neighbours=10), ItemKNNBM25(neighbours=10, k1=1.2), ALS(factors=4, alpha=10.0)],
)
def test_collaborative_models_rank_the_co_purchased_item_first(shop, model):
    index, m, probe = shop
    scores = model.fit(m, seed=1).score(probe)[0]
    assert best_unseen(index, scores, {"a"}) == "b"


def test_popularity_prefers_recent_sales_with_a_half_life():
    inter = rows(
        *[(f"old{u}", "vintage", 0) for u in range(5)], *[(f"new{u}", "fresh", 100) for u in range(3)]
    )
    index = Index.of(inter)
    m = build(inter, index)
    probe = m.rows(np.array([0]))
    plain = Popularity(half_life=None).fit(m).score(probe)[0]
    recent = Popularity(half_life=0.1).fit(m).score(probe)[0]
    pos = index.item_pos
    assert plain[pos["vintage"]] > plain[pos["fresh"]]
    assert recent[pos["fresh"]] > recent[pos["vintage"]]
    assert plain.max() == 1.0 and not Popularity.personal


def test_buy_again_scores_own_items_by_frequency_and_recency():
    inter = rows(
        ("u", "often", 0), ("u", "often", 10), ("u", "often", 20), ("u", "once", 100), ("v", "other", 50)
    )
    index = Index.of(inter)
    m = build(inter, index)
    probe = m.rows(np.array([index.user_pos["u"]]))
    freq = BuyAgain(half_life=None).fit(m).score(probe)[0]
    recent = BuyAgain(half_life=0.05).fit(m).score(probe)[0]
    pos = index.item_pos
    assert freq[pos["often"]] == 3.0 and freq[pos["once"]] == 1.0 and freq[pos["other"]] == 0.0
    assert recent[pos["once"]] > recent[pos["often"]] > 0


def test_content_ranks_items_with_similar_text_vectors_and_needs_them(shop):
    index, m, probe = shop
    vectors = np.zeros((index.n_items, 3), np.float32)
    vectors[index.item_pos["a"]] = [1, 0, 0]
    vectors[index.item_pos["e"]] = [0.9, 0.1, 0]  # reads like a, though nobody bought them together
    vectors[index.item_pos["c"]] = [0, 1, 0]
    scores = Content().fit(m, vectors).score(probe)[0]
    assert best_unseen(index, scores, {"a"}) == "e"
    assert scores[index.item_pos["b"]] == 0.0  # no text, no score
    with pytest.raises(ModelSkipped):
        Content().fit(m, None)


def test_every_model_restores_from_its_arrays_with_equal_scores(shop):
    index, m, probe = shop
    vectors = np.random.default_rng(0).normal(size=(index.n_items, 8)).astype(np.float32)
    for name, cls in MODELS.items():
        model = cls().fit(m, vectors, seed=0)
        json.dumps(model.params | model.state())  # the manifest part is JSON
        again = cls.restore(model.params, model.state(), model.arrays(), index.n_items)
        np.testing.assert_allclose(again.score(probe), model.score(probe), rtol=1e-5, err_msg=name)


def test_zscore_ignores_excluded_cells_and_flat_rows():
    import scipy.sparse as sp

    S = np.array([[100.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]], np.float32)
    z = zscore(S, sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]])))
    np.testing.assert_allclose(z[0, 1:], [-1.2247449, 0.0, 1.2247449], rtol=1e-5)
    assert (z[1] == 0).all()


def grouped() -> Interactions:
    """Three taste groups of eight items; each user buys five items of their group over time."""
    rng = np.random.default_rng(7)
    out = []
    for u in range(90):
        for n, item in enumerate(rng.choice(8, size=5, replace=False)):
            out.append((f"user{u}", f"g{u % 3}-{item}", 1000 + 10 * n + u))
    return rows(*out)


def test_hybrid_weights_start_from_the_best_single_model(shop):
    inter = grouped()
    index = Index.of(inter)
    bundle = fit_tuned(
        inter, index, "random", exclude_seen=True, seed=0, names=["popularity", "ease", "buy_again"]
    )
    assert set(bundle.models) == {"popularity", "ease", "buy_again"}
    assert bundle.tuned and "hybrid" in bundle.validation
    best_single = max(v["ndcg@10"] for n, v in bundle.validation.items() if n != "hybrid")
    assert bundle.validation["hybrid"]["ndcg@10"] >= best_single
    assert bundle.weights.get("ease", 0) > 0
    probe = history(index, ["g1-0", "g1-1"], [1.0, 2.0], [1.0, 1.0], t_now=3.0)
    assert best_unseen(index, bundle.hybrid().score(probe)[0], {"g1-0", "g1-1"}).startswith("g1-")
    # A component that only adds noise gets no weight.
    index, m, _ = shop
    t = target(m, build(rows(("probe", "b", 400)), index), exclude_seen=True)
    good = zscore(EASE(l2=10.0).fit(m).score(m.rows(t.users)), t.exclude)
    noise = np.random.default_rng(0).normal(size=good.shape).astype(np.float32) * 5
    weights, value = tune_weights({"ease": good, "noise": noise}, t, 1)
    assert weights == {"ease": 1.0} and value == 1.0
    assert Hybrid({"ease": EASE()}, {"ease": 0.0, "ghost": 1.0}).weights == {}


# ---- artifacts -------------------------------------------------------------------------------------


def test_artifact_round_trip_versions_and_pruning(shop, tmp_path, one_grid_point):
    index, m, probe = shop
    bundle = fit_tuned(co_purchase(), index, "random", exclude_seen=True, names=["popularity", "ease", "als"])
    groups = np.array([f"g-{i}" for i in index.item_ids])
    paths = [
        artifact.save(
            tmp_path, bundle, index, data_hash=f"{n:064x}", item_groups=groups, meta={"source": "test"}
        )
        for n in range(5)
    ]
    assert artifact.latest(tmp_path) == paths[-1]
    assert [p.name for p in artifact.versions(tmp_path)] == [p.name for p in paths[-artifact.KEEP :]]
    art = artifact.load(paths[-1])
    assert art.manifest["source"] == "test" and art.manifest["data_hash"].endswith("4")
    assert art.manifest["hybrid"]["weights"] == bundle.weights and art.item_groups.tolist() == groups.tolist()
    assert art.nbytes() > 0
    for name, model in bundle.models.items():
        np.testing.assert_allclose(art.models[name].score(probe), model.score(probe), rtol=1e-5)
    manifest = json.loads((paths[-1] / "manifest.json").read_text())
    manifest["format"] = 99
    (paths[-1] / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(artifact.ArtifactError, match="shopdesk train recsys"):
        artifact.load(paths[-1])
    (tmp_path / "LATEST").unlink()
    assert artifact.latest(tmp_path) == paths[-1]  # without the pointer: the newest complete directory
    manifest["format"] = artifact.FORMAT
    manifest["models"]["ease"]["arrays"] = ["missing"]
    (paths[-1] / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(artifact.ArtifactError, match="incomplete or inconsistent"):
        artifact.load(paths[-1])


# ---- eval ------------------------------------------------------------------------------------------


def structured_csv(tmp_path: Path) -> Path:
    path = tmp_path / "grouped.csv"
    from recsys.data import write_interactions_csv

    return write_interactions_csv(grouped(), path)


def test_evaluate_beats_popularity_on_structured_data(tmp_path):
    inter = load_interactions_csv(structured_csv(tmp_path))
    result = evaluate(inter, "random", k=5)
    assert result.n_users == 90 and result.n_items == 24 and result.split == "random"
    assert "content" in result.skipped and "content" not in result.metrics
    assert list(result.metrics)[-1] == "hybrid"
    assert result.metrics["ease"]["ndcg@5"] > result.metrics["popularity"]["ndcg@5"] + 0.1
    assert result.metrics["hybrid"]["ndcg@5"] > result.metrics["popularity"]["ndcg@5"] + 0.1


@pytest.fixture
def one_grid_point(monkeypatch):
    """Each model tries one hyper-parameter point: the CLI's plumbing is under test, not the tuning."""
    for cls in MODELS.values():
        monkeypatch.setattr(cls, "grid", cls.grid[:1])


def test_eval_cli_json_shape_and_splits(tmp_path, one_grid_point):
    path = structured_csv(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["eval", "recsys", "--interactions", str(path), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(body) == {"models", "n_users", "n_items", "split"}
    assert body["split"] == "random" and body["n_users"] == 90 and body["n_items"] == 24
    expected = {"popularity", "itemknn_cosine", "itemknn_bm25", "als", "ease", "buy_again", "hybrid"}
    assert set(body["models"]) == expected
    assert all(set(v) == {"ndcg@10", "recall@20", "coverage"} for v in body["models"].values())
    table = runner.invoke(cli.app, ["eval", "recsys", "--interactions", str(path), "--split", "last-basket"])
    assert table.exit_code == 0, table.output
    assert "NDCG@10" in table.stdout and "hybrid" in table.stdout and "last-basket split" in table.stdout


def test_eval_cli_bad_input_exits_non_zero_naming_the_line(tmp_path):
    runner = CliRunner()
    bad = write(tmp_path, "user,item,timestamp\nu,i,1\nu,j,2,9\n")
    result = runner.invoke(cli.app, ["eval", "recsys", "--interactions", str(bad), "--json"])
    assert result.exit_code == 2
    assert "line 3" in result.stderr and "expected 3 fields" in result.stderr and result.stdout == ""
    missing = runner.invoke(cli.app, ["eval", "recsys", "--interactions", str(tmp_path / "none.csv")])
    assert missing.exit_code == 2 and "not found" in missing.stderr
    one_time = write(tmp_path, "user,item,timestamp\nu,i,1\nv,j,1\n", "flat.csv")
    flat = runner.invoke(cli.app, ["eval", "recsys", "--interactions", str(one_time), "--split", "time"])
    assert flat.exit_code == 2 and "time split" in flat.stderr
    wrong = runner.invoke(cli.app, ["eval", "recsys", "--interactions", str(one_time), "--split", "loo"])
    assert wrong.exit_code == 2 and "unknown split" in wrong.stderr
