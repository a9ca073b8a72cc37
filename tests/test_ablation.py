import math

import pytest

from metaq_utils.ablation import frontier_rows, summarize_run, variant_table


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
