"""Issue 21: the field's benchmark networks (LeNet-5-Caffe, LeNet-300-100) under the protocol.

    python experiments/benchmarks.py dense  --arch lenet5caffe --seed 0        # dense reference (resumable)
    python experiments/benchmarks.py recipe --arch lenet5caffe --seed 0 --params '{"density_scale": 1.0}'
    python experiments/benchmarks.py search --arch lenet300100 --trials 8       # Optuna NSGA-II, validation only
    python experiments/benchmarks.py front  --arch lenet300100                  # the study's trials, the choice
    python experiments/benchmarks.py seeds  --arch lenet300100 --seed 1        # the chosen knobs on seed 1 (test once)
    python experiments/benchmarks.py aggregate                                  # results/BENCHMARKS.md + frontier
    python experiments/benchmarks.py ship   --arch lenet5caffe                  # the best seed on validation
    python experiments/benchmarks.py status                                     # the declared runs and their state

* **Dense references.** LeNet-300-100's are the protocol campaign's (``runs/dense_reference/protocol/
  lenet300100/adam_cos_aug_seed{0,1,2}``, 40 epochs; declared here with that campaign's identity, so its
  results are recognised by their key). LeNet-5-Caffe's are trained here with the same
  recipe (``adam_cos_aug``: Adam 1e-3, cosine, rotation ±10° / translation 10 %) for ``DENSE_EPOCHS[arch]``
  epochs — fewer than the 40 of the other networks because one LeNet-5-Caffe epoch costs ≈ 25 s on one
  core here (≈ 5× LeNet-5) — best epoch on validation, test evaluated once.
  Written to ``runs/dense_reference/protocol/<arch>/adam_cos_aug_e<E>_seed<s>/``.
* **Headline recipe** (:mod:`metaq_utils.recipes.prune_quantize`, ours, not METaQ) from those references:
  ``KEEP[arch]`` sets the shape of the per-tensor kept fractions (LAMP re-allocates the same total),
  the knobs in ``--params``; each run in ``runs/benchmarks/<arch>/<config hash>/seed<s>/``; every choice on
  validation (the recipe picks its quantization epoch on validation, the test set is evaluated once, on
  the decoded file).

Every run is declared (:func:`dense_run`, :func:`recipe_run`, :func:`seeds_run`, :func:`dc_run`: name, folder,
identity = method, network, seed and settings with their budgets, prerequisites) for
:class:`metaq_utils.campaign.Campaign` (issue 22: the one runner), which claims it, skips it when its folder
holds the result of the same identity, and records a failure under ``runs/benchmarks/_state/failed/``. A
result written before the runner is accepted only when its network, seed, settings and dense start are the
declared ones (:func:`same_run`); its identity is then recorded beside it in ``identity.json``. An
interrupted run resumes from its own checkpoints (``last.pt``, ``prune_last.pt``, ``quant_last.pt``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metaq_utils.campaign import Campaign, Run  # noqa: E402
from metaq_utils.nn.checkpoints import load_checkpoint  # noqa: E402
from metaq_utils.nn.data import load_mnist  # noqa: E402
from metaq_utils.nn.networks import EXPECTED_PARAMETERS as EXPECTED  # noqa: E402
from metaq_utils.nn.training import TrainConfig, evaluate, make_model, train  # noqa: E402
from metaq_utils.recipes.prune_quantize import RecipeConfig, run_recipe  # noqa: E402
from metaq_utils.store.atomic import atomic_write_bytes  # noqa: E402

RUNS = REPO / "runs"
SEEDS = (0, 1, 2)
DENSE_EPOCHS = {"lenet5caffe": 20, "lenet300100": 40, "lenet5": 40}
DENSE_RECIPE = dict(optimizer="adam", lr=1e-3, lr_schedule="cosine", augment=True, weight_decay=0.0)
# Shape of the kept fractions per weight tensor at density_scale 1 (biases are never pruned).
KEEP = {
    "lenet5caffe": {"conv1.weight": 0.6, "conv2.weight": 0.08, "fc1.weight": 0.008, "fc2.weight": 0.1},
    "lenet300100": {"fc1.weight": 0.02, "fc2.weight": 0.06, "fc3.weight": 0.3},
}
# The search space of the recipe's knobs per network: name -> (low, high, log scale).
SPACE = {
    "lenet5caffe": {"density_scale": (0.3, 1.2, False), "step": (0.3, 0.9, False), "alpha": (0.0, 0.9, False),
                    "prune_lr": (3e-4, 2e-3, True), "structure": (0.0, 1.0, False)},
    "lenet300100": {"density_scale": (0.8, 2.5, False), "step": (0.3, 0.9, False), "alpha": (0.0, 0.9, False),
                    "prune_lr": (3e-4, 2e-3, True), "structure": (0.0, 1.0, False)},
}
FIXED = {"quant_lr": 6e-05}           # the LeNet-5 search's choice (results/HEADLINE.md), not searched again
# The choice rule, fixed before the search: the smallest file whose decoded validation accuracy reaches LEVEL.
LEVEL = {"lenet5caffe": 0.99, "lenet300100": 0.984}
# The recipe's budget per network (written with every run).
BUDGET = {"lenet5caffe": dict(prune_epochs=12, quant_epochs=3, allocation="lamp"),
          "lenet300100": dict(prune_epochs=20, quant_epochs=4, allocation="lamp")}
# Deep Compression (Han et al.) on LeNet-5-Caffe at the paper's rates: Han, Pool, Tran & Dally 2015 (Table 2,
# "LeNet-5": conv1 66 %, conv2 12 %, fc1 8 %, fc2 19 % of the weights kept) and Han, Mao & Dally 2016 (8-bit conv,
# 5-bit fc, 39x at 0.74 % error). Our pipeline (metaq_utils.baselines.deep_compression) prunes by
# threshold = q · σ_layer; the qualities below give those kept fractions on a Gaussian layer (2(1 − Φ(q)) = the
# fraction), the real fractions are measured and written. Budget (ours, the paper gives no LeNet epochs): 3
# prune-retrain rounds × 6 epochs + 1 epoch of centroid fine-tuning (≈ 20 LeNet-5-Caffe epochs, as its dense reference).
DC_CAFFE = dict(quality=1.75, layer_quality=(("conv1.weight", 0.44), ("conv2.weight", 1.55), ("fc2.weight", 1.31)),
                rounds=3, retrain_epochs=6, finetune_epochs=1, weight_decay=1e-4, init="linear", codec="huffman")
DC_CAFFE_BITS = ((8, 5), (5, 4))


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def _plain(x):
    """``x`` as JSON reads it back (tuples become lists): how a result.json holds a setting."""
    return json.loads(json.dumps(x))


def command() -> str:
    return " ".join(["python", "experiments/benchmarks.py"] + sys.argv[1:])


_DATA: list = []


def data():
    """MNIST with the validation split, loaded once, when a run starts."""
    if not _DATA:
        _DATA.append(load_mnist())
    return _DATA[0]


# ------------------------------------------------------------------------------------------------
# folders


def dense_dir(arch: str, seed: int) -> Path:
    if arch == "lenet300100":
        return RUNS / "dense_reference" / "protocol" / arch / f"adam_cos_aug_seed{seed}"
    return RUNS / "dense_reference" / "protocol" / arch / f"adam_cos_aug_e{DENSE_EPOCHS[arch]}_seed{seed}"


def recipe_config(arch: str, params: dict, seed: int) -> RecipeConfig:
    knobs = {**BUDGET[arch], **params}
    return RecipeConfig(keep=tuple(KEEP[arch].items()), seed=seed, **knobs)


def recipe_dir(arch: str, params: dict) -> Path:
    key = json.dumps({k: (round(float(v), 6) if isinstance(v, (int, float)) else v)
                      for k, v in sorted({**BUDGET[arch], **params}.items())})
    return RUNS / "benchmarks" / arch / ("cfg_" + hashlib.sha256(key.encode()).hexdigest()[:12])


def seeds_dir(arch: str, params: dict) -> Path:
    return RUNS / "benchmarks" / arch / "seeds" / recipe_dir(arch, params).name


def dc_dir(bits: tuple[int, int], seed: int) -> Path:
    return RUNS / "benchmarks" / "lenet5caffe" / "deep_compression" / f"paper_rates_conv{bits[0]}_fc{bits[1]}" / f"seed{seed}"


# ------------------------------------------------------------------------------------------------
# the work of one run (each returns the dict the runner writes as result.json)


def run_dense(arch: str, seed: int, out: Path) -> dict:
    cfg = TrainConfig(arch=arch, seed=seed, **dense_settings(arch))
    model = make_model(cfg)
    t0 = time.time()

    def report(epoch: int, row: dict) -> None:
        print(f"[{arch} s{seed}] epoch {epoch:3d} loss {row['train_loss']:.4f} "
              f"val {100 * row['val_accuracy']:.2f} % ({row['epoch_seconds']:.1f} s)", flush=True)

    res = train(model, data(), cfg, checkpoint_path=out / "last.pt", resume=True, best_path=out / "best.pt",
                epoch_callbacks=[report], progress=False)
    best = load_checkpoint(out / "best.pt", expected_arch=arch).build_model()
    test = evaluate(best, data().test_x, data().test_y)["accuracy"]          # the test set, once
    row = {r["epoch"]: r for r in res.history}[res.best_epoch]
    print(f"done: best epoch {res.best_epoch} val {100 * row['val_accuracy']:.2f} % test {100 * test:.2f} %")
    return {"command": command(), "arch": arch, "recipe": "adam_cos_aug", "seed": seed, "train_config": cfg.to_dict(),
            "selection": "validation", "split": data().split, "best_epoch": res.best_epoch,
            "val_accuracy": row["val_accuracy"], "test_accuracy": test,
            "final_val_accuracy": res.final["val_accuracy"], "n_params": sum(p.numel() for p in best.parameters()),
            "epoch_seconds_mean": statistics.fmean(r["epoch_seconds"] for r in res.history), "history": res.history,
            "wall_seconds_this_session": time.time() - t0, "checkpoint": "best.pt"}


def run_prune_ste(arch: str, params: dict, seed: int, out: Path, *, evaluate_test: bool, extra: dict,
                  resume_from: Path | None = None) -> dict:
    """The recipe from seed ``seed``'s dense reference into ``out``; ``resume_from``: a finished run of the
    same configuration and seed whose checkpoints it starts from (the search trial, for seed 0's seeds run)."""
    import shutil
    if resume_from is not None and resume_from.exists() and not out.exists():
        out.mkdir(parents=True)
        for name in ("prune_last.pt", "quant_last.pt", "quant_best.pt"):
            if (resume_from / name).exists():
                shutil.copyfile(resume_from / name, out / name)
    return run_recipe(dense_dir(arch, seed) / "best.pt", data(), recipe_config(arch, params, seed), out,
                      evaluate_test=evaluate_test, progress=False,
                      log=lambda m: print(f"[{arch} s{seed}] {m}", flush=True), extra={"command": command(), **extra})


def run_dc(bits: tuple[int, int], seed: int, out: Path) -> dict:
    """Deep Compression on LeNet-5-Caffe from one seed's dense reference at one bit setting. The pruned
    network of a seed is shared by its bit settings: the first prunes and caches it (``_pruned/``), the
    other (declared after it) reloads it; the test set is evaluated once per file."""
    import dataclasses
    from metaq_utils.baselines.deep_compression import DeepCompression, DeepCompressionConfig, masks_from_zeros
    from metaq_utils.nn.checkpoints import CheckpointError, save_checkpoint
    arch = "lenet5caffe"
    base = DeepCompressionConfig(**DC_CAFFE, seed=seed)
    ref_path = dense_dir(arch, seed) / "best.pt"
    cache = RUNS / "benchmarks" / arch / "deep_compression" / "_pruned" / f"seed{seed}.pt"
    t0 = time.time()
    pruned = None
    try:
        ck = load_checkpoint(cache, expected_arch=arch)
        if ck.config.get("prune") == _plain(DC_CAFFE):
            pruned, history = ck.build_model(), ck.config["history"]
            masks = masks_from_zeros(pruned)
    except (CheckpointError, FileNotFoundError):
        pass
    if pruned is None:
        dense = load_checkpoint(ref_path, expected_arch=arch).build_model()
        pruned, masks, history = DeepCompression(base, data()).prune_and_retrain(dense, arch)
        save_checkpoint(cache, pruned, arch, config={"prune": DC_CAFFE, "history": history,
                                                     "dense_reference": str(ref_path.relative_to(REPO))},
                        metrics={"val_accuracy": history[-1]["val_accuracy"], "density": history[-1]["density"]})
        for h in history:
            print(f"[dc s{seed}] {h['stage']:8s} round {h['round']}: val {100 * h['val_accuracy']:.2f} %  "
                  f"density {100 * h['density']:.2f} %", flush=True)
    cfg = dataclasses.replace(base, conv_bits=bits[0], fc_bits=bits[1])
    result, _ = DeepCompression(cfg, data()).compress(pruned, arch, masks, history)
    d = result.to_json_dict()
    d.update(run=out.parent.name, seed=seed, test_accuracy=result.accuracy, val_accuracy=result.val_accuracy,
             selection="validation", dense_reference=str(ref_path.relative_to(REPO)), split=data().split,
             file="model.mtq", seconds=time.time() - t0, command=command(),
             budget=(f"{DC_CAFFE['rounds']} prune-retrain rounds x {DC_CAFFE['retrain_epochs']} ep (Adam 5e-4 cosine, "
                     f"L2 1e-4) + {DC_CAFFE['finetune_epochs']} ep centroid fine-tuning; paper's kept fractions "
                     f"(q = 1.75, per-layer q conv1 0.44, conv2 1.55, fc2 1.31); from the dense reference ({DENSE_EPOCHS[arch]} ep)"))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "model.mtq", result.file_bytes)
    print(f"[dc s{seed}] conv{bits[0]} fc{bits[1]}: val {100 * d['val_accuracy']:.2f} % test "
          f"{100 * d['test_accuracy']:.2f} %, {d['file_bits']:,} bits ({d['compression_ratio']:.0f}x)", flush=True)
    return d


# ------------------------------------------------------------------------------------------------
# the declared runs (metaq_utils.campaign: resume by identity, claims, order, failures)


def dense_settings(arch: str) -> dict:
    return dict(epochs=DENSE_EPOCHS[arch], batch_size=64, **DENSE_RECIPE)


def dense_name(arch: str, seed: int) -> str:
    return f"dense:{arch}:s{seed}"


def dense_run(arch: str, seed: int) -> Run:
    # LeNet-300-100's reference is the protocol campaign's run (experiments/protocol_campaign.py): declared with
    # that campaign's identity, so the result it wrote is this run
    identity = {"campaign": "protocol" if arch == "lenet300100" else "benchmarks", "method": "dense", "arch": arch,
                "seed": seed, "recipe": "adam_cos_aug", "config": _plain(dense_settings(arch))}
    return Run(dense_name(arch, seed), dense_dir(arch, seed), identity, lambda out: run_dense(arch, seed, out))


def _recipe_identity(arch: str, params: dict, seed: int, part: str) -> dict:
    return {"campaign": "benchmarks", "method": "ours-prune-ste", "part": part, "arch": arch, "seed": seed,
            "config": _plain(recipe_config(arch, params, seed).to_dict())}


def recipe_run(arch: str, params: dict, seed: int, *, evaluate_test: bool = True, extra: dict | None = None,
               write_params: bool = False) -> Run:
    """The recipe with knobs ``params`` on one seed (``recipe``; the search's trials, seed 0, without the test set)."""
    out = recipe_dir(arch, params) / f"seed{seed}"

    def job(out: Path) -> dict:
        if write_params:
            write_json(out.parent / "params.json", {"arch": arch, "params": params, "budget": BUDGET[arch],
                                                    "keep": KEEP[arch]})
        return run_prune_ste(arch, params, seed, out, evaluate_test=evaluate_test,
                             extra={"params": params, **(extra or {})})

    return Run(f"recipe:{arch}:{out.parent.name}:s{seed}", out, _recipe_identity(arch, params, seed, "recipe"), job,
               after=(dense_name(arch, seed),))


def seeds_run(arch: str, params: dict, seed: int) -> Run:
    """The chosen knobs on one seed, the test set evaluated once (seed 0 starts from the search trial's checkpoints)."""
    out = seeds_dir(arch, params) / f"seed{seed}"
    job = lambda out: run_prune_ste(arch, params, seed, out, evaluate_test=True,  # noqa: E731
                                    extra={"chosen_params": params},
                                    resume_from=recipe_dir(arch, params) / "seed0" if seed == 0 else None)
    return Run(f"seeds:{arch}:{out.parent.name}:s{seed}", out, _recipe_identity(arch, params, seed, "seeds"), job,
               after=(dense_name(arch, seed),))


def dc_name(bits: tuple[int, int], seed: int) -> str:
    return f"dc:lenet5caffe:conv{bits[0]}_fc{bits[1]}:s{seed}"


def dc_run(bits: tuple[int, int], seed: int) -> Run:
    identity = {"campaign": "benchmarks", "method": "deep-compression", "arch": "lenet5caffe", "seed": seed,
                "config": _plain({**DC_CAFFE, "conv_bits": bits[0], "fc_bits": bits[1]})}
    first = DC_CAFFE_BITS[0]          # the first bit setting prunes, the other reuses its network
    after = (dense_name("lenet5caffe", seed),) + (() if bits == first else (dc_name(first, seed),))
    return Run(dc_name(bits, seed), dc_dir(bits, seed), identity, lambda out: run_dc(bits, seed, out), after)


def same_run(run: Run, res: dict) -> str | None:
    """The check of a result written before the runner: it is the declared run if its network, seed, every
    declared setting and, for a compressed network, the dense reference it started from agree."""
    ident = run.identity
    recorded = res.get({"dense": "train_config", "ours-prune-ste": "recipe"}.get(ident["method"], "config")) or {}
    bad = [f"{k} {res.get(k)!r} (declared {ident[k]!r})" for k in ("arch", "recipe")
           if k in ident and not isinstance(res.get(k), dict) and res.get(k) != ident[k]]
    seed = res.get("seed", recorded.get("seed"))
    if seed != ident["seed"]:
        bad.append(f"seed {seed!r} (declared {ident['seed']!r})")
    bad += [f"config.{k} {recorded.get(k)!r} (declared {v!r})" for k, v in ident["config"].items()
            if _plain(recorded.get(k)) != v]
    if ident["method"] != "dense":
        start = str(dense_dir(ident["arch"], ident["seed"]).relative_to(RUNS) / "best.pt")
        if not str(res.get("dense_reference", "")).endswith(start):
            bad.append(f"started from {res.get('dense_reference')!r} (declared {start!r})")
    if ident.get("part") == "seeds" and "test_accuracy" not in res:
        bad.append("no test accuracy")
    return "; ".join(bad) or None


def campaign(*runs: Run) -> Campaign:
    """The declared runs: the dense references and Deep Compression, and ``runs`` (the recipe's, whose knobs
    come from the command line or the study)."""
    declared = [dense_run(a, s) for a in DENSE_EPOCHS for s in SEEDS]
    declared += [dc_run(b, s) for s in SEEDS for b in DC_CAFFE_BITS]
    names = {r.name for r in declared}
    declared += [r for r in runs if r.name not in names]
    return Campaign("benchmarks", declared, RUNS / "benchmarks" / "_state", command=command(), legacy=same_run)


class NotFinished(RuntimeError):
    """A requested run did not finish (its prerequisites are missing, another process holds it, it failed)."""


def run_one(run: Run) -> dict:
    """Run ``run`` unless it is done (a failure recorded before is tried again); its result."""
    c = campaign(run)
    run = next(r for r in c.runs if r.name == run.name)
    states = c.status()
    if states[run.name] == "done":
        print(f"{run.out}: done")
    else:
        missing = [a for a in run.after if states[a] not in ("done", "skipped")]
        if missing:
            raise NotFinished(f"{run.name} needs {missing} first: run `benchmarks.py dense --arch "
                              f"{run.identity['arch']} --seed {run.identity['seed']}`" if missing[0].startswith("dense:")
                              else f"{run.name} needs {missing} first")
        c.run("cli", only=[run.name], retry_failed=True)
        if not c.is_done(run):
            state = c.status()[run.name]
            raise NotFinished(f"{run.name}: {state}" + (f" (see {c.state / 'failed' / (run.name + '.txt')})"
                                                        if state == "failed" else ""))
    return json.loads((Path(run.out) / "result.json").read_text())


def cmd_dense(args) -> None:
    torch.set_num_threads(1)
    run_one(dense_run(args.arch, args.seed))


def cmd_recipe(args) -> None:
    torch.set_num_threads(1)
    params = json.loads(args.params)
    res = run_one(recipe_run(args.arch, params, args.seed, evaluate_test=not args.no_test, write_params=True))
    print(f"done: val {100 * res['val_accuracy']:.2f} % test {100 * res.get('test_accuracy', float('nan')):.2f} % "
          f"{res['file_bits']} bits ({res['compression_ratio']:.0f}x), {res['seconds']:.0f} s")


def storage(arch: str) -> str:
    return f"sqlite:///{RUNS / 'benchmarks' / arch / 'search' / 'study.sqlite3'}"


def study(arch: str, sampler_seed: int = 20261128):
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback
    (RUNS / "benchmarks" / arch / "search").mkdir(parents=True, exist_ok=True)
    st = RDBStorage(storage(arch), heartbeat_interval=60, grace_period=180,
                    failed_trial_callback=RetryFailedTrialCallback(max_retry=2))
    sampler = optuna.samplers.NSGAIISampler(population_size=6, seed=sampler_seed)
    return optuna.create_study(study_name=f"prune_ste_{arch}_v1", storage=st, sampler=sampler, load_if_exists=True,
                               directions=["maximize", "minimize"])


def trial_params(trial, arch: str) -> dict:
    return {**{k: trial.suggest_float(k, lo, hi, log=log) for k, (lo, hi, log) in SPACE[arch].items()}, **FIXED}


def cmd_search(args) -> None:
    """Search trials run on seed 0's dense reference and never evaluate the test set."""
    torch.set_num_threads(1)
    s = study(args.arch, args.sampler_seed)
    for params in json.loads(args.enqueue or "[]"):
        s.enqueue_trial(params)

    def objective(trial) -> tuple[float, float]:
        params = trial_params(trial, args.arch)
        run = recipe_run(args.arch, params, 0, evaluate_test=False, extra={"trial": trial.number})
        res = run_one(run)
        trial.set_user_attr("dir", str(run.out.relative_to(REPO)))
        trial.set_user_attr("weight_density", res["weight_density"])
        print(f"[{args.arch} #{trial.number}] {params} -> val {100 * res['val_accuracy']:.2f} %, "
              f"{res['file_bits']:,} bits ({res['seconds']:.0f} s)", flush=True)
        return res["val_accuracy"], float(res["file_bits"])

    done = sum(1 for t in s.trials if t.state.name == "COMPLETE")
    s.optimize(objective, n_trials=max(0, args.trials - done))


def completed(arch: str) -> list[dict]:
    rows, seen = [], set()
    for t in study(arch).trials:
        if t.state.name == "COMPLETE" and t.user_attrs["dir"] not in seen:   # a retried trial counts once
            seen.add(t.user_attrs["dir"])
            rows.append({"number": t.number, **t.params, **FIXED, "val_accuracy": t.values[0],
                         "file_bits": int(t.values[1]), **t.user_attrs})
    return rows


def choose(arch: str, rows: list[dict]) -> dict | None:
    """The rule fixed before the search: the smallest file whose validation accuracy reaches LEVEL.
    Fallback added on 2026-12-04, after LeNet-5-Caffe's first 6 trials all stayed below 99.0 % (still on
    validation only): where no trial reaches LEVEL, the trial with the highest validation accuracy (ties: the
    smaller file) — the best validation-selected point the issue asks to ship when a tier is missed."""
    if not rows:
        return None
    ok = [r for r in rows if r["val_accuracy"] >= LEVEL[arch]]
    if ok:
        return min(ok, key=lambda r: r["file_bits"])
    return max(rows, key=lambda r: (r["val_accuracy"], -r["file_bits"]))


def cmd_front(args) -> None:
    rows = sorted(completed(args.arch), key=lambda r: r["file_bits"])
    best = -1.0
    for r in rows:
        mark = "*" if r["val_accuracy"] > best else " "
        best = max(best, r["val_accuracy"])
        knobs = " ".join(f"{k} {r[k]:.3g}" for k in SPACE[args.arch])
        print(f"{mark} #{r['number']:3d} {knobs}  density {r['weight_density']:.4f}  val {100 * r['val_accuracy']:.2f} %  "
              f"{r['file_bits']:,} bits ({32 * EXPECTED[args.arch] / r['file_bits']:.0f}x)")
    print("chosen:", choose(args.arch, rows))




def chosen(arch: str, params_json: str | None) -> dict:
    if params_json:
        return json.loads(params_json)
    c = choose(arch, completed(arch))
    if c is None:
        raise SystemExit(f"no completed {arch} trial")
    return {k: c[k] for k in (*SPACE[arch], *FIXED)}




def cmd_seeds(args) -> None:
    """The chosen configuration on one seed: the recipe from that seed's dense reference, the test set
    evaluated once on the decoded file. Seed 0 resumes from the search trial's finished checkpoints."""
    torch.set_num_threads(1)
    res = run_one(seeds_run(args.arch, chosen(args.arch, args.params), args.seed))
    print(f"seed {args.seed}: val {100 * res['val_accuracy']:.2f} %, test {100 * res['test_accuracy']:.2f} %, "
          f"{res['file_bits']:,} bits ({res['compression_ratio']:.0f}x)", flush=True)


def cmd_dc(args) -> None:
    """Deep Compression on LeNet-5-Caffe from one seed's dense reference, every bit setting."""
    torch.set_num_threads(1)
    for bits in DC_CAFFE_BITS:
        run_one(dc_run(bits, args.seed))


def finished(runs: list[Run]) -> list[dict]:
    """The results of those of ``runs`` that are done, in their order."""
    got = campaign(*runs).results()
    return [got[r.name] for r in runs if r.name in got]


def seed_results(arch: str, params: dict) -> list[dict]:
    runs = [seeds_run(arch, params, s) for s in SEEDS]
    got = campaign(*runs).results()
    return [got[r.name] | {"seed": s} for s, r in zip(SEEDS, runs) if r.name in got]


def dense_results(arch: str) -> list[dict]:
    return finished([dense_run(arch, s) for s in SEEDS])


def declared(arch_list=("lenet5caffe", "lenet300100")) -> list[Run]:
    """Every run this campaign knows of: the dense references, Deep Compression, each study's trials, the recipe
    runs of ``recipe`` (their ``params.json``) and the chosen knobs' seeds."""
    runs = []
    for arch in arch_list:
        try:
            rows = completed(arch)
        except Exception:                       # no study yet
            rows = []
        runs += [recipe_run(arch, {k: r[k] for k in (*SPACE[arch], *FIXED)}, 0, evaluate_test=False) for r in rows]
        for p in sorted((RUNS / "benchmarks" / arch).glob("cfg_*/params.json")):
            params = json.loads(p.read_text())["params"]
            runs += [recipe_run(arch, params, s) for s in SEEDS if (p.parent / f"seed{s}").exists()]
        c = choose(arch, rows)
        if c is not None:
            runs += [seeds_run(arch, {k: c[k] for k in (*SPACE[arch], *FIXED)}, s) for s in SEEDS]
    seen: set[str] = set()
    return [r for r in runs if not (r.name in seen or seen.add(r.name))]


def cmd_status(args) -> None:
    c = campaign(*declared())
    for name, state in c.status().items():
        print(f"{state:8s} {name}")


def budget_text(arch: str) -> str:
    b = BUDGET[arch]
    return (f"{b['prune_epochs']} ep gradual pruning (LAMP allocation) + {b['quant_epochs']} ep straight-through "
            f"quantization (Adam, cosine, augmentation, distillation from the dense reference; density, step, "
            f"distillation weight, pruning lr and structure chosen by an Optuna NSGA-II search on seed 0's validation "
            f"accuracy and file size, experiments/benchmarks.py); from the dense reference ({DENSE_EPOCHS[arch]} ep "
            f"Adam cosine with augmentation, epoch chosen on validation)")


def _pm(xs, k=100.0, f=".2f") -> str:
    return f"{k * statistics.fmean(xs):{f}} ± {k * statistics.stdev(xs):{f}}" if len(xs) > 1 else f"{k * xs[0]:{f}}"


def cmd_aggregate(args) -> None:
    """results/BENCHMARKS.md (the published records beside our measured rows, the dense references, each
    study's trials) and the frontier rows of the chosen configurations (>= 3 seeds only)."""
    from metaq_utils.frontier import PUBLISHED_RECORDS, aggregate_seeds, append_points, read_frontier
    L = ["# The field's benchmark networks (issue 21): LeNet-5-Caffe and LeNet-300-100", "",
         "Written by `python experiments/benchmarks.py aggregate` from the runs under `runs/benchmarks/` and",
         "`runs/dense_reference/protocol/`. Ours are real files (the context codec), decoded and evaluated once on the",
         "test set; every choice on the validation split. The published sizes are each paper's own bit count.", ""]
    dc_points = []          # Deep Compression on LeNet-5-Caffe (cmd_dc): one frontier row per bit setting, >= 3 seeds
    for bits in DC_CAFFE_BITS:
        res = finished([dc_run(bits, s) for s in SEEDS])
        if len(res) >= 3:
            dc_points.append(aggregate_seeds(
                res, method="deep-compression", network="lenet5caffe", n_params=EXPECTED["lenet5caffe"],
                run=str(dc_dir(bits, 0).parent.relative_to(RUNS)), budget=res[0]["budget"],
                notes=f"Han et al.'s kept fractions (conv1 66 %, conv2 12 %, fc1 8 %, fc2 19 %), {bits[0]}-bit conv / "
                      f"{bits[1]}-bit fc k-means sharing, Huffman; measured density "
                      f"{100 * statistics.fmean(r['density'] for r in res):.2f} %"))
    if dc_points:
        append_points(dc_points)
    rows = []
    for arch in ("lenet5caffe", "lenet300100"):
        n = EXPECTED[arch]
        for r in PUBLISHED_RECORDS:
            if r.network == arch:
                rows.append((arch, r.method, f"{100 * r.error:.2f}", "", f"{r.ratio:g}×", f"{r.file_bits:,}",
                             r.counts, r.source))
        try:
            params = chosen(arch, None)
        except SystemExit:
            params = None
        res = seed_results(arch, params) if params else []
        if params and len(res) >= 3:
            err = [1 - r["test_accuracy"] for r in res]
            bits = [r["file_bits"] for r in res]
            rows.append((arch, "ours-prune-ste (not METaQ)", _pm(err), f"{len(res)}",
                         f"{32 * n / statistics.fmean(bits):.0f}×", f"{statistics.fmean(bits):,.0f} ± {statistics.stdev(bits):,.0f}",
                         "real file (context codec), decoded and tested", f"runs/{seeds_dir(arch, params).relative_to(RUNS)}"))
        for p in read_frontier():
            if p.network == arch and p.selection == "validation" and p.seeds >= 3 and p.method != "ours-prune-ste":
                rows.append((arch, p.method, f"{100 * (1 - p.test_acc_mean):.2f} ± {100 * (p.test_acc_std or 0):.2f}",
                             f"{p.seeds}", f"{32 * n / p.file_bits:.0f}×", f"{p.file_bits:,}",
                             "real file, decoded and tested", f"frontier run `{p.run}`"))
    L += ["| network | method | test error (%) | seeds | ratio | size (bits) | what the size counts | source |",
          "|---|---|---|---|---|---|---|---|"]
    L += ["| " + " | ".join(r) + " |" for r in rows]
    L += ["", "## Dense references", "", "| network | seeds | best epoch | val acc (%) | test acc (%) | epochs | s / epoch |",
          "|---|---|---|---|---|---|---|"]
    for arch in ("lenet5caffe", "lenet300100"):
        d = dense_results(arch)
        if d:
            L.append(f"| {arch} | {len(d)} | {', '.join(str(r['best_epoch']) for r in d)} | "
                     f"{_pm([r['val_accuracy'] for r in d])} | {_pm([r['test_accuracy'] for r in d])} | "
                     f"{DENSE_EPOCHS[arch]} | {statistics.fmean(r['epoch_seconds_mean'] for r in d):.1f} |")
    points = []
    for arch in ("lenet5caffe", "lenet300100"):
        try:
            trials = sorted(completed(arch), key=lambda r: r["file_bits"])
        except Exception:                       # no study yet
            trials = []
        if not trials:
            continue
        c = choose(arch, trials)
        L += ["", f"## {arch}: the search (validation only; rule fixed before it: the smallest file with validation "
              f"accuracy ≥ {100 * LEVEL[arch]:.1f} %)", "",
              "| trial | " + " | ".join(SPACE[arch]) + " | density | val acc (%) | file bits | ratio |",
              "|---|" + "---|" * (len(SPACE[arch]) + 4)]
        for r in trials:
            mark = " **chosen**" if c is not None and r["number"] == c["number"] else ""
            L.append(f"| #{r['number']}{mark} | " + " | ".join(f"{r[k]:.3g}" for k in SPACE[arch]) +
                     f" | {100 * r['weight_density']:.2f} % | {100 * r['val_accuracy']:.2f} | {r['file_bits']:,} | "
                     f"{32 * EXPECTED[arch] / r['file_bits']:.0f}× |")
        if c is None:
            continue
        if c["val_accuracy"] < LEVEL[arch]:
            L.append(f"\nNo trial reached {100 * LEVEL[arch]:.1f} % on validation; chosen by the fallback rule "
                     f"(the highest validation accuracy, `choose()` in experiments/benchmarks.py).")
        params = {k: c[k] for k in (*SPACE[arch], *FIXED)}
        res = seed_results(arch, params)
        L += ["", "| seed | val acc (%) | test acc (%) | file bits | ratio | density |", "|---|---|---|---|---|---|"]
        L += [f"| {r['seed']} | {100 * r['val_accuracy']:.2f} | {100 * r['test_accuracy']:.2f} | {r['file_bits']:,} | "
              f"{r['compression_ratio']:.0f}× | {100 * r['weight_density']:.2f} % |" for r in res]
        if len(res) >= 3:
            knobs = ", ".join(f"{k}={v:.3g}" for k, v in params.items())
            points.append(aggregate_seeds(res, method="ours-prune-ste", network=arch,
                                          run=str(seeds_dir(arch, params).relative_to(RUNS)), budget=budget_text(arch),
                                          n_params=EXPECTED[arch],
                                          notes=f"ours (not METaQ): gradual LAMP pruning + STE uniform quantization, "
                                                f"distilled; context codec; knobs {knobs}"))
    if points:
        append_points(points)
    out = REPO / "results" / "BENCHMARKS.md"
    atomic_write_bytes(out, ("\n".join(L) + "\n").encode())
    print("\n".join(L))


def cmd_ship(args) -> None:
    """Ship the seed with the best validation accuracy of the chosen configuration: its files into both
    model folders and ``results/headline_<arch>.json`` (the fields of ``results/headline.json``)."""
    import shutil
    from metaq_utils.nn.checkpoints import AFTER_DIR, BEFORE_DIR, save_checkpoint
    from metaq_utils.pipeline import load_any
    params = chosen(args.arch, args.params)
    res = seed_results(args.arch, params)
    if len(res) < 3:
        raise SystemExit(f"only {len(res)} seed(s) finished")
    best = max(res, key=lambda r: r["val_accuracy"])           # chosen on validation
    run = seeds_dir(args.arch, params) / f"seed{best['seed']}"
    stem = f"headline_prune_ste_{args.arch}"
    pruned = load_checkpoint(run / "prune_last.pt")
    before = BEFORE_DIR / f"{stem}.pt"
    save_checkpoint(before, pruned.state_dict, pruned.arch,
                    config={**pruned.config, "stage": "after gradual pruning, before quantization",
                            "recipe": best["recipe"], "source_run": str(run.relative_to(REPO))}, metrics=pruned.metrics)
    after = AFTER_DIR / f"{stem}.pt"
    shutil.copyfile(run / "decoded.pt", after)
    mtq = AFTER_DIR / f"{stem}.context.mtq"
    shutil.copyfile(run / best["file"], mtq)
    data = load_mnist()
    model, arch, file_bits, n = load_any(mtq)
    acc = evaluate(model, data.test_x, data.test_y)["accuracy"]
    val = evaluate(model, data.val_x, data.val_y)["accuracy"]
    if acc != best["test_accuracy"] or file_bits != best["file_bits"]:
        raise SystemExit(f"the shipped file disagrees with its run: {acc} vs {best['test_accuracy']}, "
                         f"{file_bits} vs {best['file_bits']}")
    accs, bits = [r["test_accuracy"] for r in res], [r["file_bits"] for r in res]
    goal = {"lenet5caffe": {"accuracy": 0.99, "file_bits": 32_922, "moonshot_file_bits": 19_706},
            "lenet300100": {"accuracy": 0.984, "file_bits": 42_657, "moonshot_file_bits": 28_438}}[args.arch]
    head = {
        "compressed_file": str(mtq.relative_to(REPO)), "accuracy": acc, "file_bits": file_bits,
        "selection": "validation", "val_accuracy": val, "split": best["split"],
        "seeds": [r["seed"] for r in res], "shipped_seed": best["seed"],
        "test_acc_mean": statistics.fmean(accs), "test_acc_std": statistics.stdev(accs),
        "val_acc_mean": statistics.fmean(r["val_accuracy"] for r in res),
        "file_bits_mean": statistics.fmean(bits), "file_bits_std": statistics.stdev(bits),
        "n_params": n, "compression_ratio": 32 * n / file_bits, "bits_per_weight": file_bits / n,
        "codec": "context", "method": "ours-prune-ste (not METaQ)", "arch": args.arch, "knobs": params,
        "trained_checkpoint": str(before.relative_to(REPO)), "quantized_checkpoint": str(after.relative_to(REPO)),
        "source_run": str(run.relative_to(REPO)),
        "reproduce": [f"python experiments/benchmarks.py dense --arch {args.arch} --seed {s}" for s in (0, 1, 2)]
        + [f"python experiments/benchmarks.py seeds --arch {args.arch} --seed {s} --params '{json.dumps(params)}'"
           for s in (0, 1, 2)] + [f"python experiments/benchmarks.py ship --arch {args.arch} --params '{json.dumps(params)}'"],
        "goal": goal,
        "goal_met": acc >= goal["accuracy"] and file_bits <= goal["file_bits"],
        "goal_met_every_seed": all(a >= goal["accuracy"] and b <= goal["file_bits"] for a, b in zip(accs, bits)),
        "moonshot_met": acc >= goal["accuracy"] and file_bits <= goal["moonshot_file_bits"],
        "evaluate": f"python -m metaq_utils evaluate {mtq.relative_to(REPO)} --json",
    }
    write_json(REPO / "results" / f"headline_{args.arch}.json", head)
    print(json.dumps(head, indent=1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dense")
    d.add_argument("--arch", required=True, choices=sorted(DENSE_EPOCHS))
    d.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("recipe")
    r.add_argument("--arch", required=True, choices=sorted(KEEP))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--params", default="{}")
    r.add_argument("--no-test", action="store_true", help="search runs: do not evaluate the test set")
    q = sub.add_parser("search")
    q.add_argument("--arch", required=True, choices=sorted(SPACE))
    q.add_argument("--trials", type=int, default=8, help="total completed trials wanted in the study")
    q.add_argument("--sampler-seed", type=int, default=20261128)
    q.add_argument("--enqueue", default=None, help="JSON list of parameter dicts to try first")
    e = sub.add_parser("seeds")
    e.add_argument("--arch", required=True, choices=sorted(SPACE))
    e.add_argument("--seed", type=int, required=True)
    e.add_argument("--params", default=None, help="JSON knobs (default: the study's validation choice)")
    a = sub.add_parser("aggregate")
    h = sub.add_parser("ship")
    h.add_argument("--arch", required=True, choices=sorted(SPACE))
    h.add_argument("--params", default=None)
    c = sub.add_parser("dc", help="Deep Compression on LeNet-5-Caffe at the paper's rates")
    c.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("front")
    f.add_argument("--arch", required=True, choices=sorted(SPACE))
    sub.add_parser("status", help="the declared runs and their state")
    args = p.parse_args(argv)
    try:
        {"dense": cmd_dense, "recipe": cmd_recipe, "search": cmd_search, "front": cmd_front, "seeds": cmd_seeds,
         "aggregate": cmd_aggregate, "ship": cmd_ship, "dc": cmd_dc, "status": cmd_status}[args.cmd](args)
    except NotFinished as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main()
