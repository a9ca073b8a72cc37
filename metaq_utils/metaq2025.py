"""METaQ's 2025 form (cardiaa/METaQ ``1b7583f``, :mod:`metaq_utils.core.reference_2025`) trained
under the protocol, and the main job (``make run``) built on it.

Training follows ``utils/trainer.py`` 13–90 at 1b7583f: Adam lr 7e−4 with coupled weight decay
λα (λ = 0.0015, α = 0.533), batch 64, rotation ±10° + translation 10 % (``train.py`` 12–16), and
per batch *two* Adam steps: one on the plain cross-entropy, then one on the cross-entropy plus
λ(1 − α)·β, β from the warm-started δ-shifted pruning knapsack + FISTA on the weights after the
first step (:class:`Reference2025Solver`). The logged configuration: C = 64, r = 1.1,
bucket_zero = 32, w0 = −0.017, δ = 10.53 (the block of the log that reports 99.03 % / 2.01 %).

Deviations (named, ours): (1) the reference trains 100 epochs from uniform[w0 − r, w0 + r]; here
``epochs`` from a dense reference checkpoint (default
``runs/dense_reference/protocol/lenet5/adam_cos_aug_seed{s}/best.pt``, committed); (2) inputs are
normalised with the MNIST mean/std as that dense model was trained (the reference feeds [0, 1]);
(3) the protocol: training on the 55,000 images outside the validation split, every choice on
validation (the reference evaluates every epoch, and its ``BestQuantization`` rule, on the test
set); the test set is evaluated once, on the decoded file.

Selection (validation): every epoch the "center"-quantized, sparsified model (|q| ≤ 1e−3 → 0,
``trainer.py`` 99–147) at the training grid C = 64 is evaluated on validation; the epoch with the
highest such accuracy is kept (ties: the later epoch). On it the reference's post-training rule
(``BestQuantization``, ``quantize_and_compress.py`` 170–277) is applied on validation: among C'
in a grid of [10, 1000] (every 6th value plus 64 and 66: 167 values, not all 991 — time) whose
quantized validation accuracy is ≥ the float model's − 0.2 points, the one of lowest entropy H_Q;
if C' gives a lower sparse-model validation accuracy than C = 64 minus 0.2 points, C = 64 is
kept. The written file is the sparse model at the chosen C' (per-layer table groups, context
coder).

Configurations (:data:`CONFIGS`): ``logged``; ``zero_bucket_off`` (w0 = 0: zero is a bucket edge);
``pruning_off`` (the ``pruning="N"`` knapsack, the ebd4355 rules of :mod:`metaq_utils.core.reference`,
c clamp [0, n] where 1b7583f has [0.01, n]); ``none_pruned`` (β = 0, the same double step, weight
decay, quantization and sparsification: what the entropy term adds over pruning alone);
``flipped_sign`` (−λ(1 − α)β: at 1b7583f the two minus signs of ``knapsack.py`` 276–277 and
``trainer.py`` 85 cancel, so HEAD's sign is the thesis sign; this is the other one);
``delta5`` / ``delta20`` (δ = 5 / 20 instead of the log's 10.53, for δ chosen on validation);
``lam5e-4`` / ``lam1.5e-4`` / ``lam5e-5`` / ``lam1.5e-5`` (λ_reg below the log's 0.0015, weight decay λα with it: for
LeNet-300-100 and LeNet-5-Caffe, where the log's λ empties the network in one epoch).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .coding.fileformat import per_layer_table_groups, read_compressed, write_compressed
from .core.reference import ReferenceSolver
from .core.reference_2025 import (LOGGED, Reference2025Solver, grid_2025, quantize_center, reference_entropy,
                                  reference_size)
from .nn.checkpoints import load_checkpoint, save_checkpoint
from .nn.data import iterate_batches
from .nn.networks import model_from_compressed
from .nn.training import evaluate
from .store.paths import REPO_ROOT

DENSE_STARTS = {"lenet5": "runs/dense_reference/protocol/lenet5/adam_cos_aug_seed{seed}/best.pt",
                "lenet300100": "runs/dense_reference/protocol/lenet300100/adam_cos_aug_seed{seed}/best.pt",
                "lenet5caffe": "runs/dense_reference/protocol/lenet5caffe/adam_cos_aug_e20_seed{seed}/best.pt"}
DENSE_START = DENSE_STARTS["lenet5"]
REFERENCE_COMMIT = "1b7583f"


@dataclass(frozen=True)
class Config2025:
    """One training configuration: δ (None: the solver has none), w0 (None: the zero-bucket rule),
    the solver (``"2025"``, ``"ebd4355"`` or ``"none"``) and the sign of the added term."""
    delta: float | None
    w0: float | None
    solver: str
    sign: float = 1.0
    note: str = ""
    lam: float | None = None     # λ_reg (None: the log's 0.0015); the weight decay is λα as in trainer.py 22

    def __post_init__(self):
        if self.solver not in ("2025", "ebd4355", "none"):
            raise ValueError(f"solver must be '2025', 'ebd4355' or 'none', got {self.solver!r}")
        if self.solver == "2025" and (self.delta is None or not np.isfinite(self.delta)):
            raise ValueError(f"the 2025 solver needs a finite delta, got {self.delta!r}")
        if self.lam is not None and not (np.isfinite(self.lam) and self.lam > 0):
            raise ValueError(f"lam must be a finite number > 0, got {self.lam!r}")
        if self.sign not in (1.0, -1.0):
            raise ValueError(f"sign must be +1 or -1, got {self.sign!r}")


CONFIGS: dict[str, Config2025] = {
    "logged": Config2025(LOGGED["delta"], None, "2025", note="the log's configuration, delta = 10.53"),
    "zero_bucket_off": Config2025(LOGGED["delta"], 0.0, "2025", note="w0 = 0, no centre near zero"),
    "pruning_off": Config2025(None, None, "ebd4355", note="pruning = N knapsack (ebd4355 rules)"),
    "none_pruned": Config2025(None, None, "none", note="beta = 0: same double step, weight decay, quantization, "
                                                       "sparsification; not METaQ"),
    "flipped_sign": Config2025(LOGGED["delta"], None, "2025", sign=-1.0, note="-lambda(1-alpha)beta"),
    "delta5": Config2025(5.0, None, "2025", note="delta = 5"),
    "delta20": Config2025(20.0, None, "2025", note="delta = 20"),
    # λ_reg below the log's, for the larger networks (chosen on validation there)
    "lam5e-4": Config2025(LOGGED["delta"], None, "2025", lam=5e-4, note="lambda_reg = 5e-4"),
    "lam1.5e-4": Config2025(LOGGED["delta"], None, "2025", lam=1.5e-4, note="lambda_reg = 1.5e-4"),
    "lam5e-5": Config2025(LOGGED["delta"], None, "2025", lam=5e-5, note="lambda_reg = 5e-5"),
    "lam1.5e-5": Config2025(LOGGED["delta"], None, "2025", lam=1.5e-5, note="lambda_reg = 1.5e-5"),
}
C_PRIME = sorted(set(range(10, 1001, 6)) | {64, 66})


def _flat(model) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def _set_flat(model, w: np.ndarray) -> None:
    o = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(w[o:o + p.numel()].reshape(p.shape)))
            o += p.numel()


def _quantized(w, v, thr):
    """(center-quantized values, the same sparsified) (trainer.py 99–135)."""
    _, q = quantize_center(w, v)
    q = q + np.float32(0.0)
    s = q.copy()
    s[np.abs(s) <= thr] = 0.0
    return q, s


def _acc(model, w, x, y) -> float:
    keep = _flat(model)
    _set_flat(model, w)
    a = evaluate(model, x, y)["accuracy"]
    _set_flat(model, keep)
    return a


def beta_stats(beta: np.ndarray, zero_mask: np.ndarray) -> dict:
    """Mean/std/min/max/distinct values of β, and its mean on the weights in the zero bucket."""
    b = np.asarray(beta, dtype=np.float64)
    out = {"mean": float(b.mean()), "std": float(b.std()), "min": float(b.min()), "max": float(b.max()),
           "distinct": int(np.unique(np.round(b, 9)).size)}
    if zero_mask.any():
        out["zero_bucket_mean"] = float(b[zero_mask].mean())
        out["zero_bucket_abs_mean"] = float(np.abs(b[zero_mask]).mean())
    return out


def scan_cprime(model, w, g, thr, x, y, key: str) -> list[dict]:
    """BestQuantization's re-quantization (quantize_and_compress.py 170–277): for every C' of
    :data:`C_PRIME` on the same [w0 − r, w0 + r] (line 177), the accuracy on (x, y) under ``key`` and H_Q."""
    scan = []
    for Cp in C_PRIME:
        vp = grid_2025(Cp, LOGGED["r"], bucket_zero=0, w0=g.w0).v
        q, _ = _quantized(w, vp, thr)
        scan.append({"C": Cp, key: _acc(model, q, x, y), "entropy_quantized_bits": reference_entropy(q)})
    return scan


def choose_cprime(model, w, g, data, thr) -> tuple[int, str, list[dict], float, float]:
    """The reference's BestQuantization rule on validation: (C', rule, scan, float acc, C=64 sparse acc)."""
    acc_float = evaluate(model, data.val_x, data.val_y)["accuracy"]
    _, s64 = _quantized(w, g.v, thr)
    acc64 = _acc(model, s64, data.val_x, data.val_y)
    scan = scan_cprime(model, w, g, thr, data.val_x, data.val_y, "val_accuracy_quantized")
    ok = [r for r in scan if r["val_accuracy_quantized"] >= acc_float - 0.002]   # accuracy_tollerance 0.2 points
    chosen, rule = LOGGED["C"], "training grid (no C' within 0.2 points)"
    if ok:
        pick = min(ok, key=lambda r: r["entropy_quantized_bits"])
        _, sp = _quantized(w, grid_2025(pick["C"], LOGGED["r"], bucket_zero=0, w0=g.w0).v, thr)
        if _acc(model, sp, data.val_x, data.val_y) >= acc64 - 0.002:
            chosen, rule = pick["C"], "BestQuantization on validation (lowest H_Q within 0.2 points)"
    return chosen, rule, scan, acc_float, acc64


def best_test_of(history: list[dict]) -> dict | None:
    """The first epoch of the highest sparse test accuracy so far (strictly beats: the reference's rule)."""
    best = None
    for r in history:
        if "test_accuracy_sparse_C64" in r and (best is None or r["test_accuracy_sparse_C64"] > best["test_accuracy_sparse_C64"]):
            best = r
    return best


def reference_rule_test(model, out: Path, g, data, thr, history) -> dict:
    """The reference's own selection, on the test set (see :func:`train_2025`): the epoch of the best
    sparse test accuracy at C = 64, then C' ∈ :data:`C_PRIME` of lowest H_Q whose quantized test
    accuracy is within 0.2 points of that epoch's float test accuracy; its sparse test accuracy and
    the reference's own size. Selection ``test``: never a protocol result."""
    bt = best_test_of(history)
    if bt is None:
        raise ValueError("no epoch has a test-monitored accuracy (reference_rule_on_test was off)")
    keep = _flat(model)
    model.load_state_dict(torch.load(out / "best_test_state.pt", weights_only=False)["model"])
    w = _flat(model)
    acc_float = evaluate(model, data.test_x, data.test_y)["accuracy"]
    scan = scan_cprime(model, w, g, thr, data.test_x, data.test_y, "test_accuracy_quantized")
    ok = [r for r in scan if r["test_accuracy_quantized"] >= acc_float - 0.002]
    Cp = min(ok, key=lambda r: r["entropy_quantized_bits"])["C"] if ok else LOGGED["C"]
    v = g.v if Cp == LOGGED["C"] else grid_2025(Cp, LOGGED["r"], bucket_zero=0, w0=g.w0).v
    q, sp = _quantized(w, v, thr)
    ref = reference_size(q, thr)
    res = {"selection": "test", "epoch": bt["epoch"], "test_accuracy_sparse_C64": bt["test_accuracy_sparse_C64"],
           "test_accuracy_float": acc_float, "C_chosen": Cp,
           "test_accuracy_sparse_Cprime": _acc(model, sp, data.test_x, data.test_y),
           "reference_sparse_bits": ref["sparse_bits"], "reference_sparse_ratio": ref["sparse_ratio"],
           "reference_sparsity": ref["sparsity"], "scan": scan}
    _set_flat(model, keep)
    return res


def train_2025(out: str | Path, config: str, seed: int, epochs: int, data, *, command: str,
               start: str | Path | None = None, progress: Callable[[str], None] | None = None,
               arch: str = "lenet5", reference_rule_on_test: bool = False) -> dict[str, Any]:
    """Train one run into ``out`` (resumable after every epoch from ``out/last.pt``), select on
    validation, write ``out/model.mtq`` (the decoded file is evaluated once on the test set) and
    ``out/result.json``; return the result. ``start``: the warm-start checkpoint (default the
    seed's committed dense reference of ``arch``: :data:`DENSE_STARTS`).

    ``reference_rule_on_test``: also apply the reference's own selection as it runs it, on the test
    set (``trainer.py`` 99–147: the sparse test accuracy every epoch, the epoch that beats the best so
    far; ``quantize_and_compress.py`` 170–277: C' of lowest H_Q within 0.2 points on test), reported
    apart as ``result["reference_rule_test_selected"]`` with ``selection = "test"``, to compare with
    the log like for like. It never touches the validation-selected result (the same training: the
    extra evaluations use no random numbers)."""
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration {config!r}; one of {list(CONFIGS)}")
    if arch not in DENSE_STARTS:
        raise ValueError(f"unknown architecture {arch!r}; one of {list(DENSE_STARTS)}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    cfg = CONFIGS[config]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = Path(start) if start is not None else REPO_ROOT / DENSE_STARTS[arch].format(seed=seed)
    say = progress or (lambda s: None)
    log = open(out / "log.txt", "a", buffering=1)
    torch.manual_seed(seed)
    g = grid_2025(LOGGED["C"], LOGGED["r"], w0=cfg.w0)
    lam = LOGGED["lam"] if cfg.lam is None else cfg.lam
    alpha, thr = LOGGED["alpha"], LOGGED["sparsity_threshold"]
    model = load_checkpoint(start, expected_arch=arch).build_model()
    model.train()
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    opt = torch.optim.Adam(params, lr=LOGGED["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=lam * alpha)
    xi0 = np.sort(np.random.default_rng(seed).uniform(LOGGED["min_xi"], LOGGED["max_xi"], g.C)).astype(np.float32)
    if cfg.solver == "2025":
        solver = Reference2025Solver(g.v, n, cfg.delta, iterations=LOGGED["iterations"], zeta=LOGGED["zeta"],
                                     c_lo=LOGGED["c_lo"], xi0=xi0)
    elif cfg.solver == "ebd4355":
        solver = ReferenceSolver(g.v, n, iterations=LOGGED["iterations"], zeta=LOGGED["zeta"], xi0=xi0)
    else:
        solver = None
    gen = torch.Generator().manual_seed(1000 + seed)
    history, first, best = [], 0, None
    if (out / "last.pt").exists():
        st = torch.load(out / "last.pt", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        if solver is not None:
            solver.xi = st["xi"].copy()
        history, first, best = st["history"], st["epoch"], st["best"]
        log.write(f"resumed at epoch {first}\n")
    scale = cfg.sign * lam * (1 - alpha)
    total = torch.empty(n)
    views, o = [], 0
    for p in params:
        views.append(total[o:o + p.numel()].view_as(p))
        o += p.numel()
    for epoch in range(first, epochs):
        t0 = time.time()
        for xb, yb in iterate_batches(data.train_x, data.train_y, LOGGED["batch_size"], gen, augment=True):
            opt.zero_grad()                                            # trainer.py 44–51
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            opt.zero_grad()                                            # 53–56
            loss = F.cross_entropy(model(xb), yb)
            if solver is not None:
                w = torch.cat([p.detach().reshape(-1) for p in params]).numpy()   # 58
                solver.step(w, scale, total.numpy())                   # 69–70, 85: (1−α)λ·β
                for p, v in zip(params, views):
                    p.grad = v.clone()
            loss.backward()                                            # 89
            opt.step()                                                 # 90
        train_s = time.time() - t0
        w = _flat(model)
        q, s = _quantized(w, g.v, thr)
        k, _ = quantize_center(w, g.v)
        zero_mask = k == g.bucket_zero
        row = {"epoch": epoch + 1, "train_seconds": train_s,
               "val_accuracy": evaluate(model, data.val_x, data.val_y)["accuracy"],
               "val_accuracy_quantized": _acc(model, q, data.val_x, data.val_y),
               "val_accuracy_sparse": _acc(model, s, data.val_x, data.val_y),
               "entropy_float_bits": reference_entropy(w), "entropy_quantized_bits": reference_entropy(q),
               "zero_bucket_share": float(zero_mask.mean()),
               **{f"ref_{a}": b for a, b in reference_size(q, thr).items()}}
        if solver is not None:
            if isinstance(solver, Reference2025Solver):
                row["kinds"] = solver.kind_shares()         # of the epoch's last training step
            row["xi"] = [float(x) for x in solver.xi]
            row["beta"] = beta_stats(total.numpy().astype(np.float64) / scale, zero_mask)   # last step's β
        if reference_rule_on_test:
            row["test_accuracy_sparse_C64"] = _acc(model, s, data.test_x, data.test_y)   # test-selected, apart
            bt = best_test_of(history)
            if bt is None or row["test_accuracy_sparse_C64"] > bt["test_accuracy_sparse_C64"]:   # "beats the best"
                torch.save({"model": model.state_dict(), "epoch": epoch + 1}, out / "best_test_state.pt.tmp")
                Path(out / "best_test_state.pt.tmp").replace(out / "best_test_state.pt")
        history.append(row)
        if best is None or row["val_accuracy_sparse"] >= best["val_accuracy_sparse"]:
            best = {k2: row[k2] for k2 in ("epoch", "val_accuracy", "val_accuracy_sparse", "val_accuracy_quantized")}
            torch.save({"model": model.state_dict()}, out / "best_state.pt.tmp")
            Path(out / "best_state.pt.tmp").replace(out / "best_state.pt")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "xi": None if solver is None else solver.xi.copy(), "history": history, "epoch": epoch + 1,
                    "best": best}, out / "last.pt.tmp")
        Path(out / "last.pt.tmp").replace(out / "last.pt")
        line = (f"epoch {epoch + 1} train {train_s:.0f}s val {row['val_accuracy']:.4f} valQ "
                f"{row['val_accuracy_quantized']:.4f} valS {row['val_accuracy_sparse']:.4f} H_Q "
                f"{row['entropy_quantized_bits']} sparsity {row['ref_sparsity']:.4f} zero_bucket "
                f"{row['zero_bucket_share']:.4f} sparse_ratio {row['ref_sparse_ratio']:.4%} "
                f"beta {row.get('beta', {}).get('mean', 0):.4g}±{row.get('beta', {}).get('std', 0):.3g} "
                f"kinds {row.get('kinds')}")
        log.write(line + "\n")
        say(line)
    # the selected epoch, then the reference's post-training rule on validation
    model.load_state_dict(torch.load(out / "best_state.pt", weights_only=False)["model"])
    w = _flat(model)
    chosen_C, rule, scan, acc_float, acc64 = choose_cprime(model, w, g, data, thr)
    vC = g.v if chosen_C == LOGGED["C"] else grid_2025(chosen_C, LOGGED["r"], bucket_zero=0, w0=g.w0).v
    qC, sC = _quantized(w, vC, thr)
    _set_flat(model, sC)
    tensors = [p.detach().numpy().copy() + np.float32(0.0) for p in model.parameters()]
    file_bits = write_compressed(out / "model.mtq", arch, tensors, per_layer_table_groups(tensors))
    dec = model_from_compressed(read_compressed(out / "model.mtq"))
    val_dec = evaluate(dec, data.val_x, data.val_y)["accuracy"]
    test_dec = evaluate(dec, data.test_x, data.test_y)["accuracy"]            # the test set, once
    ref = reference_size(qC, thr)
    try:
        start_rel = str(start.resolve().relative_to(REPO_ROOT))
    except ValueError:
        start_rel = str(start)
    result = {"command": command, "run": out.name, "arch": arch, "config": config, "seed": seed, "epochs": epochs,
              "reference_commit": REFERENCE_COMMIT,
              "settings": {**LOGGED, "lam": lam, "delta": cfg.delta, "w0": cfg.w0, "solver": cfg.solver, "sign": cfg.sign,
                           "w0_used": g.w0, "bucket_zero": g.bucket_zero},
              "start": start_rel, "selection": "validation", "split": data.split,
              "selected_epoch": best["epoch"], "selected": best, "C_chosen": chosen_C, "C_rule": rule,
              "val_accuracy_float": acc_float, "val_accuracy_sparse_C64": acc64,
              "val_accuracy_decoded": val_dec, "test_accuracy_decoded": test_dec,
              "file_bits": file_bits, "n_params": n, "ratio_vs_float32": 32 * n / file_bits,
              "reference_size": ref, "reference_sparse_bits": ref["sparse_bits"],
              "scan": scan, "history": history}
    if reference_rule_on_test:
        result["reference_rule_test_selected"] = reference_rule_test(model, out, g, data, thr, history)
    (out / "result.json.tmp").write_text(json.dumps(result, indent=1))
    (out / "result.json.tmp").replace(out / "result.json")
    done = (f"done: epoch {best['epoch']} C'={chosen_C} val(decoded) {val_dec:.4f} test(decoded) {test_dec:.4f} "
            f"file {file_bits} bits ({32 * n / file_bits:.1f}x) reference sparse size {ref['sparse_bits']} bits "
            f"({ref['sparse_ratio']:.2%}) sparsity {ref['sparsity']:.2%}")
    log.write(done + "\n")
    say(done)
    return result


def ship(result: dict, run_dir: str | Path, name: str, before_dir: str | Path, after_dir: str | Path) -> tuple[Path, Path]:
    """Copy a finished run into the two model folders: the selected float network as a verified
    checkpoint (``before_dir/NAME.pt``, with the run's settings and metrics) and the decoded file
    (``after_dir/NAME.mtq``, byte for byte)."""
    run_dir = Path(run_dir)
    state = torch.load(run_dir / "best_state.pt", weights_only=False)["model"]
    metrics = {k: result[k] for k in ("selected_epoch", "C_chosen", "val_accuracy_decoded", "test_accuracy_decoded",
                                      "file_bits", "reference_sparse_bits")}
    before = save_checkpoint(Path(before_dir) / f"{name}.pt", state, result.get("arch", "lenet5"),
                             config={"method": "metaq-reference-2025", "config": result["config"],
                                     "seed": result["seed"], "epochs": result["epochs"],
                                     "settings": result["settings"], "start": result["start"],
                                     "command": result["command"]},
                             metrics=metrics)
    after = Path(after_dir) / f"{name}.mtq"
    from .store.atomic import atomic_write_bytes
    atomic_write_bytes(after, (run_dir / "model.mtq").read_bytes())
    return before, after


def nearest_table(result: dict, frontier_points, k: int = 6) -> str:
    """This run's decoded file beside the validation-selected frontier rows (≥ 3 seeds) of its
    network nearest to it in file size, plus the headline and the Deep Compression rows closest in size."""
    mine = result["file_bits"]
    pts = [p for p in frontier_points if p.network == result.get("arch", "lenet5") and p.selection == "validation" and p.seeds >= 3]
    pick = sorted(pts, key=lambda p: abs(np.log(p.file_bits / mine)))[:k]
    for method in ("ours-prune-ste", "deep-compression", "metaq-reference-2025"):
        same = [p for p in pts if p.method == method]
        if same and not any(p.method == method for p in pick):
            pick.append(min(same, key=lambda p: abs(np.log(p.file_bits / mine))))
    n = result["n_params"]
    lines = ["| method | run | seeds | test acc (%) | file bits | ratio |", "|---|---|---:|---:|---:|---:|",
             f"| **this run** (metaq-reference-2025, {result['config']}, seed {result['seed']}, {result['epochs']} "
             f"epochs) | {result['run']} | 1 | {100 * result['test_accuracy_decoded']:.2f} | {mine:,} | "
             f"{32 * n / mine:.1f}× |"]
    for p in sorted(pick, key=lambda p: p.file_bits):
        acc = f"{100 * p.test_acc_mean:.2f}" + ("" if p.test_acc_std is None else f" ± {100 * p.test_acc_std:.2f}")
        lines.append(f"| {p.method} | {p.run} | {p.seeds} | {acc} | {p.file_bits:,} | {32 * n / p.file_bits:.1f}× |")
    return "\n".join(lines)
