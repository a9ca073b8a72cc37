import math

import pytest

from metaq_utils.ablation import frontier_row, frontier_rows, summarize_run, variant_table


def _result(acc, ent, bits, sweep):
    return {"train_history": [{"epoch": 1, "test_accuracy": acc - 0.01, "entropy_grid_bits": ent + 10},
                              {"epoch": 2, "test_accuracy": acc, "entropy_grid_bits": ent, "beta_mean": -0.5, "beta_std": 0.0}],
            "selected": {"C_Q": 8, "accuracy": acc, "file_bits": bits},
            "sweep": [{"C_Q": c, "accuracy": a, "file_bits": b} for c, a, b in sweep], "n_params": 100}


def test_summary_and_variant_table_against_hand_computation():
    sweep = [(2, 0.5, 100), (4, 0.981, 300), (8, 0.986, 500), (16, 0.985, 900)]
    runs = [summarize_run("none_seed0", _result(0.98, 1000, 500, sweep)),
            summarize_run("none_seed1", _result(0.99, 1200, 700, sweep)),
            summarize_run("adjacent_seed0", _result(0.97, 400, 300, sweep)),
            summarize_run("adjacent_seed1", _result(0.97, 600, 300, sweep))]
    assert runs[0].min_bits_at_98 == 300 and runs[0].min_bits_at_985 == 500
    assert runs[0].beta_abs_mean_last == 0.5 and runs[0].variant == "none" and runs[0].seed == 0
    rows = {r["variant"]: r for r in variant_table(runs)}
    assert rows["none"]["final_entropy_grid_bits_mean"] == pytest.approx(1100)
    assert rows["none"]["final_entropy_grid_bits_std"] == pytest.approx(math.sqrt(2) * 100)
    adj = rows["adjacent"]
    assert adj["final_entropy_grid_bits_diff_vs_none"] == pytest.approx(-600)
    # spread = max(std_adjacent, std_none) = sqrt(2)*100 → −600 / 141.42
    assert adj["final_entropy_grid_bits_diff_in_spreads"] == pytest.approx(-600 / (math.sqrt(2) * 100))
    assert adj["method"] == "adjacent" and rows["none"]["method"] == "no-entropy-term"


def test_frontier_rows_are_the_pareto_points_of_the_sweep():
    res = _result(0.98, 1000, 500, [(2, 0.5, 100), (4, 0.981, 300), (8, 0.986, 500), (16, 0.985, 900), (32, 0.99, 1200)])
    pts = frontier_rows("none_seed0", res, method="no-entropy-term", run_prefix="ablation/")
    assert [(p.file_bits, p.accuracy) for p in pts] == [(100, 0.5), (300, 0.981), (500, 0.986), (1200, 0.99)]
    assert pts[1].run == "ablation/none_seed0/CQ4"


def _protocol_result(val, test, bits, seed_shift=0.0):
    """A pipeline result written under the protocol: val per epoch, sweep on validation, test once."""
    return {"train_history": [{"epoch": 1, "val_accuracy": val - 0.01, "entropy_grid_bits": 1010, "selection": "validation"},
                              {"epoch": 2, "val_accuracy": val, "entropy_grid_bits": 1000, "selection": "validation"}],
            "selection": "validation", "val_accuracy": val, "test_accuracy": test,
            "unquantized_val_accuracy": val + 0.001, "unquantized_test_accuracy": test + 0.001,
            "selected": {"C_Q": 8, "accuracy": val, "file_bits": bits, "evaluated_on": "validation"},
            "sweep": [{"C_Q": 4, "accuracy": val - 0.02, "file_bits": bits - 100, "evaluated_on": "validation"},
                      {"C_Q": 8, "accuracy": val, "file_bits": bits, "evaluated_on": "validation"}],
            "n_params": 100}


def test_protocol_runs_are_summarised_with_val_and_test_and_marked():
    r = summarize_run("adjacent_seed0", _protocol_result(0.991, 0.989, 500))
    assert r.selection == "validation" and r.sweep_split == "validation"
    assert r.final_accuracy is None and r.final_val_accuracy == 0.991          # no per-epoch test any more
    assert r.selected_accuracy == 0.989 and r.selected_val_accuracy == 0.991   # test, measured once; val beside it
    legacy = summarize_run("none_seed0", _result(0.98, 1000, 500, [(8, 0.98, 500)]))
    assert legacy.selection == "test" and legacy.final_accuracy == 0.98
    with pytest.raises(ValueError, match="cannot be mixed"):
        variant_table([r, legacy])
    assert variant_table([r])[0]["selection"] == "validation"


def test_protocol_run_gives_one_validation_selected_frontier_row():
    (p,) = frontier_rows("adjacent_seed0", _protocol_result(0.991, 0.989, 500), method="adjacent", budget="2 epochs")
    assert (p.selection, p.accuracy, p.val_acc_mean, p.file_bits, p.budget) == ("validation", 0.989, 0.991, 500, "2 epochs")
    legacy = frontier_rows("none_seed0", _result(0.98, 1000, 500, [(4, 0.97, 300), (8, 0.98, 500)]), method="x")
    assert [q.selection for q in legacy] == ["test", "test"]


def test_frontier_row_aggregates_seeds():
    runs = [(f"adjacent_seed{k}", _protocol_result(0.99 + d, 0.988 + d, 500 + 10 * k)) for k, d in enumerate([0, 0.002, 0.004])]
    p = frontier_row(runs, method="adjacent", budget="30 epochs")
    assert p.seeds == 3 and p.selection == "validation" and p.run == "adjacent" and p.n_params == 100
    assert p.test_acc_mean == pytest.approx(0.990) and p.test_acc_std == pytest.approx(0.002)
    assert p.file_bits_mean == pytest.approx(510) and p.file_bits_std == pytest.approx(10)
    with pytest.raises(ValueError, match="needs >= 3"):
        frontier_row(runs[:2], method="adjacent", budget="30 epochs")
