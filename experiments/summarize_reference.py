"""Summarise issue 12's campaign (experiments/reference_campaign.py) into results/.

* The reproduction (`reference`, thesis configuration, 144 epochs, seeds 0–2): for each seed the
  validation-selected epoch is quantized with the C_Q chosen on validation (lowest entropy within
  0.1 % of the unquantized validation accuracy), written with every codec, decoded and evaluated on
  the test set once. Cached per seed in ``runs/reproduction/reference_seedS/ptq.json``.
* The ablation (one budget, seeds 0–2, only the entropy term changes): per variant mean ± std of the
  validation-selected test accuracy, the final epoch's entropy (C = 6 grid), β and the share of
  weights off the grid; each variant against `none` in units of the seed spread with Welch's t-test
  (scipy.stats); max |Δw| between each variant's final weights and `none`'s of the same seed.
* ``results/reference_campaign.json``, ``results/REFERENCE_CAMPAIGN.md``,
  ``results/reference_campaign.png`` (per-epoch curves), and the reproduction's point in
  ``results/frontier.csv`` (3 seeds, mean ± std, selection = validation).

    python experiments/summarize_reference.py [--ablation-epochs 30]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from metaq_utils.core.grid import Grid  # noqa: E402
from metaq_utils.nn.checkpoints import load_checkpoint  # noqa: E402
from metaq_utils.nn.data import load_mnist  # noqa: E402
from metaq_utils.nn.ptq import model_vector, quantize_model, select_point, sweep_cq  # noqa: E402
from metaq_utils.nn.training import evaluate  # noqa: E402
from metaq_utils.pipeline import code_with_every_codec, default_cq_values  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
VARIANT_ORDER = ("none", "reference", "reference_head", "constant_best", "bundle_optimal", "adjacent")
DESCRIPTION = {
    "none": "no entropy term (L2 only, λα·2w)",
    "reference": "METaQ under the reference code's rules (+λ(1−α)β)",
    "reference_head": "the same with the repository HEAD's sign (−λ(1−α)β)",
    "constant_best": "our former solver: constant start c* = n/C, best point returned (ours, not METaQ)",
    "bundle_optimal": "β at the dual optimum (proximal bundle, warm-started; thesis grid)",
    "adjacent": "the adjacent-bucket relaxation (ours, spec §4.4)",
}


def _ms(xs, scale=1.0, nd=2) -> str:
    xs = np.asarray([x for x in xs if x is not None], dtype=float) * scale
    if xs.size == 0:
        return "—"
    sd = xs.std(ddof=1) if xs.size > 1 else float("nan")
    return f"{xs.mean():.{nd}f} ± {sd:.{nd}f}" if xs.size > 1 else f"{xs.mean():.{nd}f}"


def ptq_for_seed(run_dir: Path, data, max_cq: int, tolerance: float) -> dict:
    """C_Q chosen on validation for the validation-selected epoch; files; test once. Cached."""
    cache = run_dir / "ptq.json"
    if cache.exists():
        return json.loads(cache.read_text())
    ck = load_checkpoint(run_dir / "best.pt")
    model = ck.build_model()
    g = ck.grid or {"w0": -0.11, "r": 1.114, "C": 6}
    w0, r = float(g["w0"]), float(g["r"])
    val_unq = evaluate(model, data.val_x, data.val_y)["accuracy"]
    sweep = sweep_cq(model, data.val_x, data.val_y, default_cq_values(max_cq), evaluated_on="validation",
                     w0=w0, r=r, progress=False, arch=ck.arch, codec="range")
    sel = select_point(sweep, val_unq, tolerance, select_on="validation")
    grid = Grid(w0, r, sel.C_Q)
    qmodel, _ = quantize_model(model, grid)
    rows = code_with_every_codec(qmodel, ck.arch, grid, data, out_dir=run_dir, stem=f"{run_dir.name}_CQ{sel.C_Q}")
    out = {"checkpoint": str((run_dir / "best.pt").relative_to(REPO)), "val_unquantized": val_unq,
           "test_unquantized": evaluate(model, data.test_x, data.test_y)["accuracy"],
           "selected": sel.to_dict(), "tolerance": tolerance, "max_cq": max_cq, "selection": "validation",
           "codecs": [r.__dict__ for r in rows]}
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(cache)
    return out


def flat_weights(path: Path) -> np.ndarray:
    return model_vector(load_checkpoint(path).build_model())


def ablation(folder: Path) -> dict:
    runs: dict[str, dict[int, dict]] = {}
    for f in sorted(folder.glob("*_seed*/result.json")):
        name, seed = f.parent.name.rsplit("_seed", 1)
        runs.setdefault(name, {})[int(seed)] = json.loads(f.read_text())
    table = {}
    for name in [v for v in VARIANT_ORDER if v in runs]:
        rs = runs[name]
        finals = [r["history"][-1] for r in rs.values()]
        row = {
            "seeds": sorted(rs), "description": DESCRIPTION.get(name, name),
            "best_val": [r["best"]["val_accuracy"] for r in rs.values()],
            "best_test": [r["best"]["test_accuracy"] for r in rs.values()],
            "final_test": [r["final"]["test_accuracy"] for r in rs.values()],
            "final_entropy": [h.get("entropy_grid_bits") for h in finals],
            "final_beta_mean": [h.get("beta_mean") for h in finals],
            "final_beta_min": [h.get("beta_min") for h in finals],
            "final_beta_max": [h.get("beta_max") for h in finals],
            "final_share_above": [h.get("share_above_grid") for h in finals],
            "steps_beta_all_zero": [all(h.get("beta_max", 0) == 0 and h.get("beta_min", 0) == 0 for h in r["history"])
                                    for r in rs.values()],
        }
        table[name] = row
    # against `none`: Welch's t-test and the difference in units of the pooled seed spread
    base = table.get("none")
    for name, row in table.items():
        if base is None or name == "none":
            continue
        for key in ("best_test", "final_entropy"):
            a, b = np.asarray(row[key], float), np.asarray(base[key], float)
            spread = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if min(a.size, b.size) > 1 else float("nan")
            row[f"{key}_vs_none"] = {"difference": float(a.mean() - b.mean()),
                                     "in_seed_spreads": float((a.mean() - b.mean()) / spread) if spread > 0 else None,
                                     "welch_p": float(stats.ttest_ind(a, b, equal_var=False).pvalue)
                                     if min(a.size, b.size) > 1 and spread > 0 else None}
        # max |Δw| between final weights and `none`'s of the same seed
        dws = []
        for seed in row["seeds"]:
            p, q = folder / f"{name}_seed{seed}" / "last.pt", folder / f"none_seed{seed}" / "last.pt"
            if p.exists() and q.exists():
                dws.append(float(np.abs(flat_weights(p) - flat_weights(q)).max()))
        row["max_abs_dw_vs_none"] = dws
    return {"folder": str(folder.relative_to(REPO)), "variants": table, "runs": runs}


def plot(repro: dict, abl: dict | None, path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    series = []
    if abl is not None:
        for name in [v for v in VARIANT_ORDER if v in abl["runs"]]:
            series.append((f"ablation {name}", list(abl["runs"][name].values())))
    if repro:
        series.append(("reproduction reference (144 ep.)", [r for r in repro.values()]))
    color = {lab: f"C{i}" for i, (lab, _) in enumerate(series)}     # one colour per series, every panel
    keys = [("val_accuracy", "validation accuracy", 100), ("entropy_grid_bits", "entropy on the C = 6 grid (bits)", 1),
            ("beta_mean", "β mean", 1), ("beta_max", "β max", 1), ("share_above_grid", "share above v_{C−1}", 1),
            ("beta_std", "β std", 1)]
    for ax, (key, label, scale) in zip(axes.flat, keys):
        for lab, rs in series:
            hs = [r["history"] for r in rs]
            L = min(len(h) for h in hs)
            ys = np.array([[h[i].get(key, np.nan) for i in range(L)] for h in hs], float) * scale
            if np.all(np.isnan(ys)):
                continue
            x = np.arange(1, L + 1)
            m = np.nanmean(ys, 0)
            ax.plot(x, m, label=lab, lw=1.2, color=color[lab], ls="--" if lab.startswith("reproduction") else "-")
            if ys.shape[0] > 1:
                ax.fill_between(x, np.nanmin(ys, 0), np.nanmax(ys, 0), alpha=0.15, color=color[lab])
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_xscale("log")
        if key == "val_accuracy":
            ax.set_ylim(90, 100)
    handles, labels = axes.flat[1].get_legend_handles_labels()     # the entropy panel has every series
    axes.flat[0].legend(handles, labels, fontsize=7, loc="lower right")
    fig.suptitle("Issue 12's runs: mean over seeds (band: min–max); runs/reproduction, runs/ablation_protocol")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ablation-epochs", type=int, default=30)
    ap.add_argument("--max-cq", type=int, default=1024)
    ap.add_argument("--tolerance", type=float, default=0.001)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    data = load_mnist(REPO / "data", verbose=False)
    out: dict = {"command": "python experiments/summarize_reference.py " + " ".join(argv or [])}
    repro = {int(f.parent.name.rsplit("seed", 1)[1]): json.loads(f.read_text())
             for f in sorted((REPO / "runs" / "reproduction").glob("reference_seed*/result.json"))}
    ptq = {s: ptq_for_seed(REPO / "runs" / "reproduction" / f"reference_seed{s}", data, a.max_cq, a.tolerance)
           for s in repro}
    out["reproduction"] = {"seeds": sorted(repro), "runs": {s: {k: v for k, v in r.items() if k != "history"}
                                                            for s, r in repro.items()}, "ptq": ptq}
    folder = REPO / "runs" / "ablation_protocol" / f"e{a.ablation_epochs}"
    abl = ablation(folder) if folder.exists() else None
    if abl is not None:
        out["ablation"] = {k: v for k, v in abl.items() if k != "runs"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reference_campaign.json").write_text(json.dumps(out, indent=1) + "\n")
    plot(repro, abl, RESULTS / "reference_campaign.png")
    md = markdown(out)
    (RESULTS / "REFERENCE_CAMPAIGN.md").write_text(md)
    print(md)
    frontier_point(out)
    return 0


def frontier_point(out: dict) -> None:
    """The reproduction's point (zstd-22 and range files; 3 seeds) in results/frontier.csv."""
    from metaq_utils.frontier import aggregate_seeds, append_points
    ptq = out["reproduction"]["ptq"]
    if len(ptq) < 3:
        return
    points = []
    for codec in ("range", "zstd22"):
        per_seed = []
        for s, p in sorted(ptq.items()):
            row = next(c for c in p["codecs"] if c["codec"] == codec)
            per_seed.append({"test_accuracy": row["decoded_accuracy"], "val_accuracy": row.get("decoded_val_accuracy"),
                             "file_bits": row["file_bits"], "selection": p["selection"], "seed": int(s)})
        points.append(aggregate_seeds(per_seed, method="metaq-reference", network="lenet5", n_params=44_426,
                                      run=f"reproduction/reference_seed{{{','.join(map(str, sorted(ptq)))}}}/{codec}",
                                      budget="144 epochs, thesis configuration, C_Q chosen on validation",
                                      notes=f"variant reference (cardiaa/METaQ ebd4355 rules), {codec} file"))
    append_points(points)


def markdown(out: dict) -> str:
    L = [f"# Issue 12: METaQ under its reference code's rules", "",
         f"Written by `{out['command'].strip()}` from the runs of `experiments/reference_campaign.py` "
         "(commands in each `result.json`). Training on the 55,000 images outside the validation split; "
         "every choice (best epoch, C_Q) on validation; the test set evaluated once per reported model.", ""]
    rep = out["reproduction"]
    if rep["seeds"]:
        L += ["## Reproduction: thesis configuration, variant `reference`, 144 epochs", "",
              "| seed | best epoch (val) | val acc | test acc (that epoch) | final test acc | C_Q (val) | "
              "quantized val acc | decoded test acc | range bits | zstd-22 bits | ratio (zstd) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in rep["seeds"]:
            r, p = rep["runs"][s], rep["ptq"][s]
            c = {x["codec"]: x for x in p["codecs"]}
            L.append(f"| {s} | {r['best']['epoch']} | {100 * r['best']['val_accuracy']:.2f} % | "
                     f"{100 * r['best']['test_accuracy']:.2f} % | {100 * r['final']['test_accuracy']:.2f} % | "
                     f"{p['selected']['C_Q']} | {100 * p['selected']['accuracy']:.2f} % | "
                     f"{100 * c['range']['decoded_accuracy']:.2f} % | {c['range']['file_bits']:,} | "
                     f"{c['zstd22']['file_bits']:,} | {c['zstd22']['compression_ratio']:.1f}× |")
        ps = [rep["ptq"][s] for s in rep["seeds"]]
        cod = lambda k, f: [next(c for c in p["codecs"] if c["codec"] == k)[f] for p in ps]
        L += ["", f"Mean ± std over {len(ps)} seeds: decoded test accuracy "
                  f"{_ms(cod('range', 'decoded_accuracy'), 100)} %, range-coded file {_ms(cod('range', 'file_bits'), 1, 0)} bits, "
                  f"zstd-22 file {_ms(cod('zstd22', 'file_bits'), 1, 0)} bits "
                  f"(the thesis reports 98.95 % at epoch 144 and a 48,824-bit zstd-22 file at 99.01 %, selected on test).", ""]
    ab = out.get("ablation")
    if ab:
        L += [f"## Ablation (`{ab['folder']}`): one budget, only the entropy term changes", "",
              "| variant | what | seeds | test acc, val-selected epoch (%) | entropy, final (bits) | "
              "β mean (final) | β max (final) | share above v_{C−1} | Δ test acc vs none (seed spreads, Welch p) | "
              "Δ entropy vs none (seed spreads, Welch p) | max abs Δw vs none |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in ab["variants"].items():
            def vs(key):
                d = r.get(f"{key}_vs_none")
                if not d:
                    return "—"
                ss = "—" if d["in_seed_spreads"] is None else f"{d['in_seed_spreads']:+.1f}"
                pp = "—" if d["welch_p"] is None else f"{d['welch_p']:.2g}"
                return f"{d['difference'] * (100 if key == 'best_test' else 1):+.3g} ({ss}, p = {pp})"
            dw = r.get("max_abs_dw_vs_none")
            L.append(f"| {name} | {r['description']} | {len(r['seeds'])} | {_ms(r['best_test'], 100)} | "
                     f"{_ms(r['final_entropy'], 1, 0)} | {_ms(r['final_beta_mean'], 1, 3)} | "
                     f"{_ms(r['final_beta_max'], 1, 2)} | {_ms(r['final_share_above'], 100, 2)} % | {vs('best_test')} | "
                     f"{vs('final_entropy')} | {'—' if not dw else f'{min(dw):.3g}–{max(dw):.3g}'} |")
        L += ["", "β statistics are those of the last training step of the final epoch (per-epoch values in "
                  "each run's `result.json` and `log.txt`, and in `results/reference_campaign.png`).", ""]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
