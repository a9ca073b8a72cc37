"""The shared frontier table: append/replace semantics, validation, atomicity, concurrent
appends, and the figure (reported points marked as reported)."""
import csv
import multiprocessing as mp

import matplotlib
import pytest

matplotlib.use("Agg")

from metaq_utils.frontier import (COLUMNS, DEEP_COMPRESSION_PUBLISHED, METAQ_REPORTED, FrontierPoint,  # noqa: E402
                                  append_points, format_frontier, pareto_front, plot_frontier, read_frontier)


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
    assert {"deep-compression (measured)", "adjacent (measured)", "METaQ reported (thesis)"} <= set(labels5)
    reported = labels5["METaQ reported (thesis)"]
    assert list(reported.get_xdata()) == [48_824] and list(reported.get_ydata()) == [pytest.approx(99.01)]
    assert reported.get_markerfacecolor() == "none"                       # hollow: not measured
    assert labels5["deep-compression (measured)"].get_marker() != labels5["adjacent (measured)"].get_marker()
    assert sorted(labels5["deep-compression (measured)"].get_xdata()) == [20_000, 40_000]
    labels300 = {line.get_label() for line in ax300.get_lines()}
    assert "METaQ reported (thesis)" not in labels300
    assert any("LeNet-300-100" in lab for lab in labels300)
    assert "| lenet5 | adjacent | a | 98.99 | 55,000 |" in format_frontier(read_frontier(path))
    import matplotlib.pyplot as plt
    plt.close(fig)
