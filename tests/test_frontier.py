"""The shared frontier table: append/replace semantics, validation, atomicity, concurrent
appends, and the figure (reported points marked as reported)."""
import csv
import multiprocessing as mp

import matplotlib
import pytest

matplotlib.use("Agg")

from metaq_utils.frontier import (COLUMNS, DEEP_COMPRESSION_PUBLISHED, METAQ_REPORTED, FrontierPoint,  # noqa: E402
                                  aggregate_seeds, append_points, format_frontier, migrate_frontier, pareto_front,
                                  plot_frontier, read_frontier)


def _row(method="deep-compression", network="lenet5", accuracy=0.99, file_bits=40_000, run="r1", **kw):
    return {"method": method, "network": network, "accuracy": accuracy, "file_bits": file_bits, "run": run, **kw}


def test_append_creates_the_table_with_the_columns(tmp_path):
    path = tmp_path / "results" / "frontier.csv"
    append_points([_row()], path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 1
    (p,) = read_frontier(path)
    assert (p.method, p.network, p.accuracy, p.file_bits, p.run) == ("deep-compression", "lenet5", 0.99, 40_000, "r1")
    assert p.n_params == 44_426 and p.bits_per_weight == pytest.approx(40_000 / 44_426, abs=1e-6)
    assert p.compression_ratio == pytest.approx(32 * 44_426 / 40_000)
    assert [f.name for f in tmp_path.joinpath("results").iterdir() if not f.name.startswith(".frontier.csv.lock")] \
        == ["frontier.csv"]                      # no temporary file left behind


def test_same_key_replaces_in_place_other_rows_untouched(tmp_path):
    path = tmp_path / "frontier.csv"
    append_points([_row(run="a"), _row(run="b"), _row(method="metaq-thesis", run="a", accuracy=0.9895, file_bits=60_000),
                   _row(network="lenet300100", run="a", file_bits=200_000)], path)
    append_points([_row(run="a", accuracy=0.985, file_bits=30_000), _row(run="c")], path)
    points = read_frontier(path)
    assert [p.key for p in points] == [("deep-compression", "lenet5", "a"), ("deep-compression", "lenet5", "b"),
                                       ("metaq-thesis", "lenet5", "a"), ("deep-compression", "lenet300100", "a"),
                                       ("deep-compression", "lenet5", "c")]
    assert (points[0].accuracy, points[0].file_bits) == (0.985, 30_000)
    assert (points[2].accuracy, points[2].file_bits) == (0.9895, 60_000)
    append_points([_row(run="a", accuracy=0.985, file_bits=30_000)], path)   # re-running: no duplicate
    assert len(read_frontier(path)) == 5
    append_points([_row(run="d", file_bits=1), _row(run="d", file_bits=2)], path)   # last one wins
    assert [p.file_bits for p in read_frontier(path, method="deep-compression", network="lenet5")][-1] == 2
    assert [p.run for p in read_frontier(path, method="metaq-thesis")] == ["a"]


def test_values_survive_the_csv_exactly(tmp_path):
    path = tmp_path / "f.csv"
    append_points([FrontierPoint("m", "lenet5", 0.98765432109876, 12345, "x", notes='q=1, "quoted", comma')], path)
    (p,) = read_frontier(path)
    assert p.accuracy == 0.98765432109876 and p.notes == 'q=1, "quoted", comma'


@pytest.mark.parametrize("bad", [dict(accuracy=99.01), dict(accuracy=-0.1), dict(file_bits=0), dict(file_bits=1.5),
                                 dict(method=""), dict(run=" r")])
def test_invalid_rows_are_refused_and_the_file_is_untouched(tmp_path, bad):
    path = tmp_path / "f.csv"
    append_points([_row()], path)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        append_points([_row(**{"run": "new", **bad})], path)
    assert path.read_bytes() == before


def _append_many(args):
    path, worker = args
    for i in range(15):
        append_points([_row(run=f"w{worker}_{i}")], path)


def test_concurrent_appends_lose_nothing(tmp_path):
    path = tmp_path / "f.csv"
    with mp.get_context("fork").Pool(3) as pool:
        pool.map(_append_many, [(path, w) for w in range(3)])
    assert sorted(p.run for p in read_frontier(path)) == sorted(f"w{w}_{i}" for w in range(3) for i in range(15))


def test_reference_points_are_the_published_numbers():
    assert (METAQ_REPORTED.network, METAQ_REPORTED.accuracy, METAQ_REPORTED.file_bits) == ("lenet5", 0.9901, 48_824)
    assert "reported" in METAQ_REPORTED.label
    by_net = {r.network: r for r in DEEP_COMPRESSION_PUBLISHED}
    assert by_net["lenet300100"].accuracy == pytest.approx(0.9842)
    assert 32 * 266_610 / by_net["lenet300100"].file_bits == pytest.approx(40, rel=1e-4)
    assert by_net["lenet5"].accuracy == pytest.approx(0.9926)
    assert 32 * 44_426 / by_net["lenet5"].file_bits == pytest.approx(39, rel=1e-4)
    assert "431K" in by_net["lenet5"].label


def test_pareto_front_keeps_only_unbeaten_points():
    pts = [FrontierPoint("m", "lenet5", acc, bits, f"r{i}") for i, (acc, bits) in
           enumerate([(0.97, 30_000), (0.99, 50_000), (0.98, 60_000), (0.985, 40_000), (0.97, 35_000), (0.99, 45_000)])]
    assert [(p.accuracy, p.file_bits) for p in pareto_front(pts)] == [(0.97, 30_000), (0.985, 40_000), (0.99, 45_000)]


def test_plot_has_log_x_one_panel_per_network_and_marks_the_reported_point(tmp_path):
    path = tmp_path / "f.csv"
    append_points([_row(run="a"), _row(run="b", accuracy=0.98, file_bits=20_000),
                   _row(method="adjacent", run="a", accuracy=0.9899, file_bits=55_000),
                   _row(network="lenet300100", run="a", accuracy=0.98, file_bits=150_000)], path)
    fig = plot_frontier(path=path)
    ax5, ax300 = fig.axes
    assert ax5.get_xscale() == "log" and ax300.get_xscale() == "log"
    assert ax5.get_title() == "lenet5" and ax300.get_title() == "lenet300100"
    labels5 = {line.get_label(): line for line in ax5.get_lines() if line.get_label() != "_nolegend_"}
    dc, adj = "deep-compression (measured, test-selected, 1 seed)", "adjacent (measured, test-selected, 1 seed)"
    assert {dc, adj, "METaQ reported (thesis)"} <= set(labels5)
    reported = labels5["METaQ reported (thesis)"]
    assert list(reported.get_xdata()) == [48_824] and list(reported.get_ydata()) == [pytest.approx(99.01)]
    assert reported.get_markerfacecolor() == "none"                       # hollow: not measured
    assert labels5[dc].get_marker() != labels5[adj].get_marker()
    assert sorted(labels5[dc].get_xdata()) == [20_000, 40_000]
    labels300 = {line.get_label() for line in ax300.get_lines()}
    assert "METaQ reported (thesis)" not in labels300
    assert any("LeNet-300-100" in lab for lab in labels300)
    assert "| lenet5 | adjacent | a | 98.99 | 55,000 |" in format_frontier(read_frontier(path))
    import matplotlib.pyplot as plt
    plt.close(fig)


# --- the protocol's columns (PROTOCOL.md): selection, seeds, mean ± std, budget -------------------

OLD_HEADER = "method,network,accuracy,file_bits,run,bits_per_weight,n_params,notes"


def test_rows_older_than_the_protocol_are_migrated_as_test_selected_single_seed(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(OLD_HEADER + "\n" + 'deep-compression,lenet5,0.9893,121664,r1,2.738577,44426,"q=1, note"\n'
                    + "adjacent,lenet5,0.99,50000,r2,,,\n")
    a, b = read_frontier(path)
    assert (a.selection, a.seeds, a.test_acc_mean, a.test_acc_std, a.file_bits_mean, a.file_bits_std, a.budget) == \
        ("test", 1, 0.9893, None, 121664.0, None, "")
    assert b.selection == "test" and b.val_acc_mean is None and b.n_params == 44_426
    migrate_frontier(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert (rows[0]["selection"], rows[0]["seeds"], rows[0]["test_acc_std"], rows[0]["file_bits_std"]) == ("test", "1", "", "")
    assert rows[0]["test_acc_mean"] == "0.9893" and rows[0]["file_bits_mean"] == "121664" and rows[0]["notes"] == "q=1, note"
    first = path.read_bytes()
    migrate_frontier(path)
    assert path.read_bytes() == first                       # idempotent
    assert read_frontier(path)[0] == a and read_frontier(path)[1].selection == "test"


def _seed_runs(selection="validation"):
    return [{"seed": 0, "test_accuracy": 0.990, "val_accuracy": 0.991, "file_bits": 50_000, "selection": selection},
            {"seed": 1, "test_accuracy": 0.992, "val_accuracy": 0.993, "file_bits": 52_000, "selection": selection},
            {"seed": 2, "test_accuracy": 0.985, "val_accuracy": 0.989, "file_bits": 51_000, "selection": selection}]


def test_aggregate_seeds_mean_std_ddof1_and_round_trip(tmp_path):
    import statistics
    p = aggregate_seeds(_seed_runs(), method="adjacent", network="lenet5", run="ours/C6", budget="30 epochs, cosine")
    assert p.seeds == 3 and p.selection == "validation" and p.budget == "30 epochs, cosine"
    assert p.test_acc_mean == pytest.approx((0.990 + 0.992 + 0.985) / 3) and p.accuracy == p.test_acc_mean
    assert p.test_acc_std == pytest.approx(statistics.stdev([0.990, 0.992, 0.985]))   # ddof = 1
    assert p.test_acc_std == pytest.approx(0.0036055512754639926)
    assert p.file_bits_mean == 51_000 and p.file_bits == 51_000 and p.file_bits_std == pytest.approx(1000.0)
    assert p.val_acc_mean == pytest.approx(0.991)
    path = tmp_path / "f.csv"
    append_points([p], path)
    from dataclasses import asdict
    (back,) = read_frontier(path)
    strip = lambda q: {k: v for k, v in asdict(q).items() if k != "bits_per_weight"}   # (written to 6 decimals)
    assert strip(back) == strip(p)                          # every protocol value survives the CSV exactly
    table = format_frontier([p], protocol=True)
    assert "| lenet5 | validation | adjacent | ours/C6 | 3 | 98.90 ± 0.36 | 99.10 | 51,000 ± 1,000 |" in table
    assert "30 epochs, cosine |" in table


def test_aggregate_seeds_enforces_the_protocol():
    kw = dict(method="m", network="lenet5", run="r", budget="8 epochs")
    with pytest.raises(ValueError, match="needs >= 3"):
        aggregate_seeds(_seed_runs()[:2], **kw)
    one = aggregate_seeds(_seed_runs()[:1], min_seeds=1, **kw)             # explicit, and says so
    assert one.seeds == 1 and one.test_acc_std is None and one.file_bits_std is None
    with pytest.raises(ValueError, match="budget"):
        aggregate_seeds(_seed_runs(), **{**kw, "budget": ""})
    with pytest.raises(ValueError, match="same seed"):
        aggregate_seeds([_seed_runs()[0]] * 3, **kw)
    no_val = [dict(r, val_accuracy=None) for r in _seed_runs()]
    with pytest.raises(ValueError, match="val_accuracy"):
        aggregate_seeds(no_val, **kw)
    mixed = _seed_runs()
    mixed[1] = dict(mixed[1], selection="test")
    assert aggregate_seeds(mixed, **kw).selection == "test"                # one test-selected seed marks the row
    assert aggregate_seeds(_seed_runs("test"), **kw).selection == "test"
    with pytest.raises(ValueError, match="selection"):
        aggregate_seeds([dict(r, selection=None) for r in _seed_runs()], **kw)


def test_frontier_point_protocol_fields_are_validated():
    with pytest.raises(ValueError, match="selection must be"):
        FrontierPoint("m", "lenet5", 0.9, 100, "r", selection="train")
    with pytest.raises(ValueError, match="only given for several seeds"):
        FrontierPoint("m", "lenet5", 0.9, 100, "r", test_acc_std=0.01)
    with pytest.raises(ValueError, match="differs from accuracy"):
        FrontierPoint("m", "lenet5", 0.9, 100, "r", test_acc_mean=0.8)
    assert FrontierPoint("m", "lenet5", 0.9, 100, "r").selection == "test"   # unmarked = test-selected


def test_plot_never_mixes_selections_and_draws_error_bars(tmp_path):
    import matplotlib.pyplot as plt
    val = aggregate_seeds(_seed_runs(), method="adjacent", network="lenet5", run="v", budget="30 ep")
    old = FrontierPoint("adjacent", "lenet5", 0.9899, 55_000, "legacy")                # test-selected, 1 seed
    fig = plot_frontier(networks=["lenet5"], points=[val, old], show_references=False)
    (ax,) = fig.axes
    lines = {l.get_label(): l for l in ax.get_lines() if not l.get_label().startswith("_")}
    vlab, tlab = "adjacent (measured, validation-selected, 3 seeds)", "adjacent (measured, test-selected, 1 seed)"
    assert set(lines) == {vlab, tlab}                       # two series, never one
    assert list(lines[vlab].get_xdata()) == [51_000] and list(lines[tlab].get_xdata()) == [55_000]
    assert lines[vlab].get_markerfacecolor() != "none" and lines[tlab].get_markerfacecolor() == "none"
    assert len(ax.containers) == 1                          # error bars for the aggregated point only
    bars = ax.containers[0]
    assert bars.has_yerr and bars.has_xerr
    plt.close(fig)
    fig = plot_frontier(networks=["lenet5"], points=[val, old], show_references=False, selection="validation")
    labels = {l.get_label() for l in fig.axes[0].get_lines() if not l.get_label().startswith("_")}
    assert labels == {vlab}
    plt.close(fig)
    with pytest.raises(ValueError, match="selection must be"):
        plot_frontier(networks=["lenet5"], points=[val], selection="both")


def test_published_records_are_on_the_benchmark_networks_and_translate_by_32n_over_ratio():
    from metaq_utils.frontier import PUBLISHED_RECORDS, published_reference_points

    by = {(r.method, r.network): r for r in PUBLISHED_RECORDS}
    # issue 21's figures: LeNet-5-Caffe 39× / 162× / 228× / 361× / 419×, LeNet-300-100 40× / 64×
    assert by[("BC-GHS", "lenet5caffe")].file_bits == round(13_794_560 / 419) == 32_923
    assert by[("soft weight-sharing", "lenet5caffe")].ratio == 162 and by[("soft weight-sharing", "lenet300100")].ratio == 64
    assert by[("Deep Compression", "lenet300100")].file_bits == round(32 * 266_610 / 40)
    assert all("no file" in r.counts for r in PUBLISHED_RECORDS)         # a paper's bit count is not a file
    refs = published_reference_points()
    assert len(refs) == len(PUBLISHED_RECORDS) and all("published" in r.label for r in refs)
