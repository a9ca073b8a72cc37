"""The shipped headline (results/headline.json) is what it says: its file decodes, has the stated
size, and gives the stated test accuracy; the aggregate matches the three seeds' results; the
selection is validation and the recorded split is the protocol's."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from metaq_utils.nn.data import VAL_SEED, VAL_SIZE
from metaq_utils.nn.training import evaluate
from metaq_utils.pipeline import load_any

REPO = Path(__file__).resolve().parent.parent
HEADLINE = json.loads((REPO / "results" / "headline.json").read_text())


def test_shipped_file_has_the_stated_size_and_accuracy(mnist):
    model, arch, bits, n = load_any(REPO / HEADLINE["compressed_file"])
    assert (arch, n) == ("lenet5", HEADLINE["n_params"])
    assert bits == HEADLINE["file_bits"] == 8 * (REPO / HEADLINE["compressed_file"]).stat().st_size
    assert evaluate(model, mnist.test_x, mnist.test_y)["accuracy"] == HEADLINE["accuracy"]
    assert evaluate(model, mnist.val_x, mnist.val_y)["accuracy"] == HEADLINE["val_accuracy"]


def test_headline_aggregate_matches_the_seed_runs():
    assert HEADLINE["selection"] == "validation"
    assert HEADLINE["split"]["val_size"] == VAL_SIZE and HEADLINE["split"]["val_seed"] == VAL_SEED
    run = REPO / HEADLINE["source_run"]
    seeds = [json.loads((run.parent / f"seed{s}" / "result.json").read_text()) for s in HEADLINE["seeds"]]
    assert len(seeds) >= 3
    acc = [r["test_accuracy"] for r in seeds]
    assert HEADLINE["test_acc_mean"] == pytest.approx(statistics.fmean(acc), abs=1e-12)
    assert HEADLINE["test_acc_std"] == pytest.approx(statistics.stdev(acc), abs=1e-12)
    assert HEADLINE["file_bits_mean"] == pytest.approx(statistics.fmean(r["file_bits"] for r in seeds))
    # the shipped seed is the best on validation, and the file is that run's
    best = max(range(len(seeds)), key=lambda i: seeds[i]["val_accuracy"])
    assert HEADLINE["seeds"][best] == HEADLINE["shipped_seed"]
    assert seeds[best]["file_bits"] == HEADLINE["file_bits"]
    assert (run / "model.mtq").read_bytes() == (REPO / HEADLINE["compressed_file"]).read_bytes()
    goal = HEADLINE["goal"]
    assert HEADLINE["goal_met"] == (HEADLINE["accuracy"] >= goal["accuracy"] and HEADLINE["file_bits"] <= goal["file_bits"])
