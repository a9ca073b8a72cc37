"""Command line: ``python -m metaq_utils <command>``.

  data                      obtain and verify MNIST (offline-capable)
  train                     train LeNet-5 with the METaQ term (or plain), save the best checkpoint
  pipeline                  train → C_Q sweep → code with every codec → decode → table (the main job)
  quantize CKPT             post-training quantization (one C_Q, or a sweep) → quantized checkpoint
  compress CKPT             quantize and write a compressed model file
  decompress FILE           compressed file → plain state_dict file (torch.save)
  evaluate PATH             a checkpoint or a compressed file → accuracy, size, ratio (--json)
  export FILE --onnx OUT    a compressed file → its decoded network as ONNX (the onnx extra)
  batch FILE                run notebooks with parameter sets (papermill, on Dask) into runs/
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.grid import THESIS_GRID_C, THESIS_GRID_R, THESIS_GRID_W0   # NumPy only: the CLI starts fast
from .coding.architectures import known_architectures                      # torch-free

__all__ = ["main"]


def _add_metaq_args(p: argparse.ArgumentParser, default_epochs: int) -> None:
    from .nn.regularizer import VARIANTS
    g = p.add_argument_group("training (defaults: the thesis' best configuration, spec §3)")
    g.add_argument("--arch", default="lenet5", choices=known_architectures())
    g.add_argument("--epochs", type=int, default=default_epochs)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--lr", type=float, default=7e-4)
    g.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--no-augment", action="store_true")
    g.add_argument("--init", default="uniform", choices=["uniform", "default"],
                   help="uniform in [w0 - r, w0 + r] (thesis) or PyTorch's default")
    m = p.add_argument_group("METaQ term")
    m.add_argument("--variant", default="reference", choices=list(VARIANTS) + ["plain"],
                   help="'reference': METaQ as its reference code runs it (metaq_utils/core/reference.py); "
                        "'plain' trains without any regularizer; the others: metaq_utils/nn/regularizer.py")
    m.add_argument("--C", type=int, default=THESIS_GRID_C)
    m.add_argument("--w0", type=float, default=THESIS_GRID_W0)
    m.add_argument("--r", type=float, default=THESIS_GRID_R)
    m.add_argument("--lam", type=float, default=0.0015)
    m.add_argument("--alpha", type=float, default=0.533)
    m.add_argument("--R", default="l2", choices=["l2", "l1"])
    m.add_argument("--method", default="fista", choices=["dss", "fista", "pbm_thesis", "bundle"])
    m.add_argument("--iterations", type=int, default=15)
    m.add_argument("--zeta", type=float, default=1e5)
    _add_xi_args(m)
    p.add_argument("--stop-rule", action="append", default=[], metavar="EPOCH:METRIC:MIN[:MAX]",
                   help="abandon the run if at EPOCH the METRIC is below MIN (or above MAX; leave MIN empty), "
                        "e.g. 5:val_accuracy:0.97 or 20:entropy_grid_bits::60000; repeatable")
    p.add_argument("--select-on", default="validation", choices=["validation", "test"],
                   help="where the best epoch (and C_Q) is selected: the validation split (the protocol, "
                        "PROTOCOL.md) or, explicitly, the test set (every result is then marked test-selected)")
    p.add_argument("--name", default=None, help="file stem of the saved models (default: metaq_<arch>)")
    p.add_argument("--checkpoint", default=None, help="last-epoch checkpoint, for --resume")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")


def _add_xi_args(m) -> None:
    """The dual solver's start and return rules (None: the variant's own, see regularizer.py)."""
    m.add_argument("--xi-start", default=None, choices=["constant", "sorted_uniform", "given"],
                   help="first start of the dual solve (default: the variant's rule)")
    m.add_argument("--xi0", default=None, metavar="A,B,...", help="the given start: C comma-separated values")
    m.add_argument("--xi-return", default=None, choices=["best", "last"],
                   help="return the best evaluated point or the last iterate (default: the variant's rule)")
    m.add_argument("--xi-seed", type=int, default=None,
                   help="seed of the sorted-uniform start (default: the training seed)")
    m.add_argument("--head-sign", action="store_true",
                   help="reference variant: add −λ(1−α)β as the reference repository's HEAD does")


def _xi_kwargs(args) -> dict:
    xi0 = None
    if args.xi0:
        try:
            xi0 = tuple(float(x) for x in args.xi0.split(","))
        except ValueError:
            raise SystemExit(f"--xi0 {args.xi0!r}: expected comma-separated numbers")
    seed = args.xi_seed if args.xi_seed is not None else getattr(args, "seed", 0)
    return {"xi_start": "given" if xi0 is not None else args.xi_start, "xi0": xi0,
            "xi_return": args.xi_return, "xi_seed": seed, "head_sign": args.head_sign}


def _stop_rules(args):
    from .nn.training import StopRule
    rules = []
    for text in args.stop_rule:
        parts = text.split(":")
        if len(parts) not in (3, 4) or not parts[0].isdigit():
            raise ValueError(f"--stop-rule {text!r}: expected EPOCH:METRIC:MIN[:MAX]")
        lo = float(parts[2]) if parts[2] else None
        hi = float(parts[3]) if len(parts) == 4 and parts[3] else None
        if lo is None and hi is None:
            raise ValueError(f"--stop-rule {text!r}: give MIN or MAX")
        rules.append(StopRule(int(parts[0]), parts[1], lo, hi))
    return rules


def _configs(args):
    from .nn.regularizer import METaQConfig
    from .nn.training import TrainConfig
    train_cfg = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, optimizer="adam",
                            lr=args.lr, betas=(0.9, 0.99), augment=not args.no_augment, seed=args.seed,
                            init=args.init, init_low=args.w0 - args.r, init_high=args.w0 + args.r,
                            lr_schedule=args.lr_schedule)
    metaq = None if args.variant == "plain" else METaQConfig(
        C=args.C, w0=args.w0, r=args.r, lam=args.lam, alpha=args.alpha, R=args.R, method=args.method,
        iterations=args.iterations, zeta=args.zeta, variant=args.variant, **_xi_kwargs(args))
    return train_cfg, metaq


def _cmd_data(args) -> int:
    from .nn.data import ensure_mnist
    source = ensure_mnist(args.root, verbose=not args.quiet)
    if not args.quiet or source != "existing":
        print(f"MNIST ready under {args.root} (source: {source})")
    return 0


def _cmd_train(args) -> int:
    from .nn.checkpoints import BEFORE_DIR
    from .nn.data import load_mnist
    from .nn.regularizer import METaQRegularizer
    from .nn.training import make_model, train
    train_cfg, metaq = _configs(args)
    data = load_mnist(args.root, verbose=False)
    model = make_model(train_cfg)
    reg = METaQRegularizer(model, metaq) if metaq is not None else None
    out = Path(args.out) if args.out else BEFORE_DIR / f"{args.name or 'metaq_' + args.arch}.pt"
    res = train(model, data, train_cfg, regularizer=reg, best_path=out, checkpoint_path=args.checkpoint,
                resume=args.resume, progress=not args.quiet, stop_rules=_stop_rules(args), select_on=args.select_on)
    if res.stopped_by:
        print(f"stopped early: {res.stopped_by}")
    key = "val_accuracy" if res.selection == "validation" else "test_accuracy"
    best = next((r for r in res.history if r["epoch"] == res.best_epoch), res.final)
    print(f"final {key} {100 * res.final.get(key, float('nan')):.2f} % after {res.final.get('epoch')} epochs; "
          f"best {res.best_metric} {best.get(res.best_metric, float('nan')):.6g} at epoch {best.get('epoch')} "
          f"(selected on {res.selection}) saved to {out}")
    if args.history:
        Path(args.history).write_text(json.dumps(res.history, indent=1))
    return 0


def _cmd_pipeline(args) -> int:
    from .nn.data import load_mnist
    from .pipeline import default_cq_values, format_table, run_pipeline
    train_cfg, metaq = _configs(args)
    data = load_mnist(args.root, verbose=False)
    res = run_pipeline(data, train_cfg, metaq, name=args.name or f"metaq_{args.arch}",
                       cq_values=default_cq_values(args.max_cq), tolerance=args.tolerance,
                       progress=not args.quiet, checkpoint_path=args.checkpoint, resume=args.resume,
                       use_best=not args.use_final, stop_rules=_stop_rules(args), select_on=args.select_on,
                       **({"before_dir": args.out_dir, "after_dir": args.out_dir} if args.out_dir else {}))
    print()
    print(format_table(res))
    print(f"checkpoints: {res.before_path} (before), {res.after_path} (after); compressed files beside it")
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(res.to_dict(), indent=1))
        print(f"results written to {args.results}")
    return 0


def _cmd_quantize(args) -> int:
    from .nn.checkpoints import AFTER_DIR, load_checkpoint
    from .nn.data import load_mnist
    from .nn.ptq import check_clean_validation, select_point, sweep_cq
    from .nn.training import evaluate
    from .pipeline import QuantizedModel, default_cq_values
    from .quant.quant_range import posttraining_range
    ck = load_checkpoint(args.checkpoint)
    rng = posttraining_range(ck, w0=args.w0, r=args.r)
    print(rng.describe())
    model = ck.build_model()
    data = load_mnist(args.root, verbose=False)
    if args.cq is None:
        if args.select_on == "validation":
            check_clean_validation(ck.config, data.split)
        sx, sy = (data.val_x, data.val_y) if args.select_on == "validation" else (data.test_x, data.test_y)
        unq = evaluate(model, sx, sy)["accuracy"]
        pts = sweep_cq(model, sx, sy, default_cq_values(args.max_cq), evaluated_on=args.select_on, w0=rng.w0, r=rng.r)
        cq = select_point(pts, unq, args.tolerance, select_on=args.select_on).C_Q
    else:
        cq = args.cq
    q = QuantizedModel.of(model, ck.arch, rng.grid(cq))
    acc = evaluate(q.model, data.test_x, data.test_y)["accuracy"]       # the test set, once, after selection
    val_acc = evaluate(q.model, data.val_x, data.val_y)["accuracy"] if data.has_validation else None
    # marked "test" if the checkpoint (legacy: no mark) or this C_Q selection used the test set
    cq_selection = args.select_on if args.cq is None else "given"
    selection = "test" if "test" in (ck.config.get("selection", "test"), cq_selection) else "validation"
    out = Path(args.out) if args.out else AFTER_DIR / f"{Path(args.checkpoint).stem}_CQ{cq}.pt"
    q.save(out, config={**ck.config, "selection": selection, "quantized_from": str(args.checkpoint),
                        "quantization_range": rng.source},
           metrics={"accuracy": acc, "test_accuracy": acc, "val_accuracy": val_acc, "selection": selection,
                    "cq_selection": cq_selection})
    val_txt = f"validation accuracy {100 * val_acc:.2f} %, " if val_acc is not None else ""
    print(f"C_Q = {cq} ({cq_selection if args.cq is not None else 'selected on ' + args.select_on}): {val_txt}"
          f"test accuracy {100 * acc:.2f} %, entropy {q.entropy_bits:,.0f} bits [selection: {selection}] → {out}")
    return 0


def _cmd_compress(args) -> int:
    from .nn.checkpoints import load_checkpoint
    from .pipeline import compress_model
    from .quant.quant_range import posttraining_range
    from .store.atomic import atomic_write_bytes
    ck = load_checkpoint(args.checkpoint)
    cq = args.cq or (ck.grid or {}).get("C")
    if cq is None:
        raise SystemExit("compress: the checkpoint has no grid; pass --cq (and --w0/--r)")
    rng = posttraining_range(ck, w0=args.w0, r=args.r)
    print(rng.describe())
    grid = rng.grid(int(cq))
    data = compress_model(ck.build_model(), ck.arch, grid, args.codec)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(f".{args.codec}.mtq")
    atomic_write_bytes(out, data)
    print(f"{out}: {8 * len(data):,} bits ({32 * ck.n_params / (8 * len(data)):.2f}×), codec {args.codec}, C_Q = {cq}")
    return 0


def _cmd_decompress(args) -> int:
    import io

    import torch
    from .coding.fileformat import read_compressed
    from .nn.networks import model_from_compressed
    from .store.atomic import atomic_write_bytes
    cm = read_compressed(args.file)
    model = model_from_compressed(cm)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".state_dict.pt")
    atomic_write_bytes(out, buf.getvalue())
    print(f"{args.file} ({cm.arch}, {cm.file_bits:,} bits) → plain state_dict {out}")
    return 0


def _cmd_evaluate(args) -> int:
    from .nn.data import load_mnist
    from .nn.training import evaluate
    from .pipeline import load_any
    model, arch, file_bits, n = load_any(args.path)
    data = load_mnist(args.root, verbose=False)
    acc = evaluate(model, data.test_x, data.test_y)["accuracy"]
    out = {"path": str(args.path), "arch": arch, "accuracy": acc, "file_bits": file_bits, "n_params": n,
           "compression_ratio": 32 * n / file_bits}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.path}: {arch}, test accuracy {100 * acc:.2f} %, {file_bits:,} bits "
              f"({out['compression_ratio']:.2f}× against {32 * n:,} bits of float32)")
    return 0


def _cmd_export(args) -> int:
    from .export import OnnxUnavailableError, export_onnx
    try:
        out = export_onnx(args.file, args.onnx, include_preprocessing=args.with_preprocessing)
    except OnnxUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['mtq']} ({out['arch']}, {out['file_bits']:,} bits) → {out['onnx']} ({out['onnx_bytes']:,} bytes, "
              f"opset {out['opset']}): input {out['input']['name']!r} (N, 1, 28, 28) float32, "
              f"output {out['output']['name']!r} (N, {out['output']['shape'][1]})")
        print(f"feed it: {out['preprocessing']['feed']}")
    return 0


def _cmd_dual(args) -> int:
    """K successive warm-started dual solves on a checkpoint's weights, on the variant's grid."""
    import numpy as np
    from .core.params import flatten
    from .core.reference import beta_summary
    from .nn.checkpoints import load_checkpoint
    from .nn.regularizer import METaQConfig, METaQRegularizer
    from .quant.quant_range import posttraining_range
    ck = load_checkpoint(args.checkpoint)
    rng = posttraining_range(ck, w0=args.w0, r=args.r)   # flags, else the checkpoint's grid, else the thesis'
    C = args.C if args.C is not None else (ck.grid or {}).get("C", THESIS_GRID_C)
    if args.variant in ("none", "adjacent"):
        raise SystemExit(f"dual: variant {args.variant!r} has no dual solve")
    if args.variant == "reference_2025":   # the logged grid (C 64, r 1.1, w0 by the zero-bucket rule) unless given
        kw = dict(iterations=args.iterations, zeta=args.zeta, delta=args.delta, **_xi_kwargs(args))
        if args.w0 is not None:
            cfg = METaQConfig(C=args.C or 64, r=args.r or 1.1, w0=args.w0, variant="reference_2025", **kw)
        else:
            cfg = METaQConfig.reference_2025(args.C or 64, args.r or 1.1, args.bucket_zero, **kw)
    else:
        cfg = METaQConfig(C=int(C), w0=rng.w0, r=rng.r, method=args.method, iterations=args.iterations,
                          zeta=args.zeta, variant=args.variant, **_xi_kwargs(args))
    model = ck.build_model()
    reg = METaQRegularizer(model, cfg)
    w = flatten(reg.params)
    v = cfg.dual_grid_v
    steps = []
    for _ in range(args.steps):
        beta = reg.entropy_gradient(w)
        steps.append({"xi": [float(x) for x in reg.xi], "phi": float(reg.last_value),
                      "beta": beta_summary(beta)})
        if cfg.variant == "reference_2025":   # the zero bucket's share, β over it, the knapsack's choices
            steps[-1]["beta"].update(reg.zero_bucket_stats(w, beta))
    out = {"checkpoint": str(args.checkpoint), "variant": cfg.variant, "grid": {"w0": cfg.w0, "r": cfg.r, "C": cfg.C},
           "dual_grid_v": [float(x) for x in v], "start_rule": cfg.start_rule, "return_rule": cfg.return_rule,
           "n": int(w.size), "share_above_grid": float(np.mean(w > v[-1])),
           "share_below_grid": float(np.mean(w < v[0])), "steps": steps}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.checkpoint}: variant {cfg.variant} (start {cfg.start_rule}, return {cfg.return_rule}), "
              f"n = {w.size:,}, {100 * out['share_above_grid']:.1f} % above v_(C-1), "
              f"{100 * out['share_below_grid']:.1f} % below v_0")
        for k, st in enumerate(steps, 1):
            b = st["beta"]
            print(f"step {k:3d}  phi {st['phi']:.6g}  beta mean {b['mean']:.4g} std {b['std']:.3g} "
                  f"min {b['min']:.4g} max {b['max']:.4g} distinct {b['distinct']}")
    return 0


def _cmd_batch(args) -> int:
    import signal

    from .batch import format_summary, run_batch

    def _terminate(signum, frame):   # SIGTERM stops a batch like Ctrl-C: finished runs are kept
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _terminate)
    try:
        rows = run_batch(args.file, args.runs_dir, kernel_name=args.kernel, dry_run=args.dry_run,
                         scheduler=args.scheduler, n_workers=args.workers)
    except KeyboardInterrupt as e:
        print(f"\ninterrupted: {e or 'run the same command again to resume'}", file=sys.stderr)
        return 130
    print()
    print(format_summary(rows))
    return 0 if all(r.get("status", "ok") == "ok" for r in rows) else 1


def _cmd_metaq2025(args) -> int:
    from .frontier import read_frontier
    from .metaq2025 import nearest_table, ship, train_2025
    from .nn.data import load_mnist
    from .store.paths import AFTER_DIR, BEFORE_DIR, RUNS_DIR
    data = load_mnist(args.root, verbose=False)
    run_dir = Path(args.run_dir) if args.run_dir else RUNS_DIR / "main_job" / f"metaq2025_{args.config}_e{args.epochs}_seed{args.seed}"
    if (run_dir / "result.json").exists():
        res = json.loads((run_dir / "result.json").read_text())
        if (res["config"], res["seed"], res["epochs"]) != (args.config, args.seed, args.epochs):
            raise ValueError(f"{run_dir} holds a different run ({res['config']}, seed {res['seed']}, "
                             f"{res['epochs']} epochs); choose another --run-dir")
        print(f"{run_dir}: finished run found, not retrained (delete the folder to train again)")
    else:
        command = "python -m metaq_utils " + " ".join(args.argv)
        res = train_2025(run_dir, args.config, args.seed, args.epochs, data, command=command, start=args.start,
                         progress=None if args.quiet else print)
    before, after = ship(res, run_dir, args.name, args.out_dir or BEFORE_DIR, args.out_dir or AFTER_DIR)
    print()
    print(f"METaQ 2025 form ({args.config}), seed {args.seed}, {args.epochs} epochs: epoch {res['selected_epoch']} "
          f"and C' = {res['C_chosen']} chosen on validation; decoded file {res['file_bits']:,} bits "
          f"({res['ratio_vs_float32']:.1f}×), validation {100 * res['val_accuracy_decoded']:.2f} %, "
          f"test (once) {100 * res['test_accuracy_decoded']:.2f} %; the reference's own size (zstd bitmask + "
          f"non-zeros) {res['reference_sparse_bits']:,} bits")
    print()
    print("beside the validation-selected LeNet-5 frontier rows (>= 3 seeds) nearest in size, results/frontier.csv:")
    print(nearest_table(res, read_frontier()))
    print(f"\nfiles: {before} (before), {after} (after); run: {run_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m metaq_utils", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="data", help="MNIST root folder (torchvision layout)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="obtain and verify MNIST")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_data)

    t = sub.add_parser("train", help="train with the METaQ term (or --variant plain)")
    _add_metaq_args(t, default_epochs=144)
    t.add_argument("--out", default=None, help="best checkpoint (default BestModelsBeforeQuantization/NAME.pt)")
    t.add_argument("--history", default=None, help="write the per-epoch metrics as JSON here")
    t.set_defaults(func=_cmd_train)

    pl = sub.add_parser("pipeline", help="train → quantize → code → decode → table")
    _add_metaq_args(pl, default_epochs=30)
    pl.add_argument("--max-cq", type=int, default=1024, help="sweep C_Q in [2, 64] and up to this value")
    pl.add_argument("--tolerance", type=float, default=0.001, help="accuracy drop allowed by the C_Q selection")
    pl.add_argument("--results", default=None, help="write the full results as JSON here")
    pl.add_argument("--out-dir", default=None, help="save checkpoints and files here instead of the two model folders")
    pl.add_argument("--use-final", action="store_true", help="quantize the final epoch, not the best one")
    pl.set_defaults(func=_cmd_pipeline)

    m25 = sub.add_parser("metaq2025", help="METaQ's 2025 form (cardiaa/METaQ 1b7583f) under the protocol: train from "
                         "the dense reference, choose on validation, write, decode, test once, table beside the frontier")
    m25.add_argument("--config", default="logged", help="a configuration of metaq_utils.metaq2025.CONFIGS")
    m25.add_argument("--epochs", type=int, default=30)
    m25.add_argument("--seed", type=int, default=0)
    m25.add_argument("--start", default=None, help="warm-start checkpoint (default: the seed's committed dense reference)")
    m25.add_argument("--run-dir", default=None, help="default runs/main_job/metaq2025_<config>_e<epochs>_seed<seed>")
    m25.add_argument("--name", default="metaq2025_lenet5", help="file stem in the two model folders")
    m25.add_argument("--out-dir", default=None, help="write the checkpoint and the file here instead of the model folders")
    m25.add_argument("--quiet", action="store_true")
    m25.set_defaults(func=_cmd_metaq2025)
    q = sub.add_parser("quantize", help="post-training quantization of a checkpoint")
    q.add_argument("checkpoint")
    q.add_argument("--cq", type=int, default=None, help="buckets; omit to sweep and select")
    q.add_argument("--w0", type=float, default=None, help="override the range centre (default: the checkpoint's "
                   "training grid; the thesis range only for a checkpoint without one, i.e. plain training)")
    q.add_argument("--r", type=float, default=None, help="override the range half-width (default as --w0)")
    q.add_argument("--max-cq", type=int, default=1024)
    q.add_argument("--tolerance", type=float, default=0.001)
    q.add_argument("--select-on", default="validation", choices=["validation", "test"],
                   help="split on which C_Q is selected: validation (the protocol; the checkpoint must have been "
                        "trained with the split held out) or, explicitly, test (the result is marked test-selected)")
    q.add_argument("--out", default=None)
    q.set_defaults(func=_cmd_quantize)

    c = sub.add_parser("compress", help="quantize a checkpoint and write a compressed model file")
    c.add_argument("checkpoint")
    c.add_argument("--cq", type=int, default=None, help="buckets (default: the checkpoint's grid)")
    c.add_argument("--w0", type=float, default=None, help="override the range centre (default as for quantize)")
    c.add_argument("--r", type=float, default=None, help="override the range half-width (default as for quantize)")
    c.add_argument("--codec", default="range", choices=["huffman", "range", "gzip9", "zstd22", "raw"])
    c.add_argument("--out", default=None)
    c.set_defaults(func=_cmd_compress)

    dl = sub.add_parser("dual", help="K warm-started dual solves on a checkpoint's weights: what β the term adds")
    dl.add_argument("checkpoint")
    dl.add_argument("--variant", default="reference", choices=["reference", "thesis", "flipped", "sorted",
                                                                 "constant_best", "reference_2025"])
    dl.add_argument("--delta", type=float, default=10.53, help="reference_2025: the shift δ of ξ (log: 10.53)")
    dl.add_argument("--bucket-zero", type=int, default=None,
                    help="reference_2025: the zero bucket (default round((C-1)/2)); sets w0 by train.py 66")
    dl.add_argument("--steps", type=int, default=1, help="successive warm-started solves (K)")
    dl.add_argument("--method", default="fista", choices=["dss", "fista", "pbm_thesis", "bundle"])
    dl.add_argument("--iterations", type=int, default=15)
    dl.add_argument("--zeta", type=float, default=1e5)
    dl.add_argument("--C", type=int, default=None, help=f"default: the checkpoint's grid (else {THESIS_GRID_C})")
    dl.add_argument("--w0", type=float, default=None, help=f"default: the checkpoint's grid (else {THESIS_GRID_W0})")
    dl.add_argument("--r", type=float, default=None, help=f"default: the checkpoint's grid (else {THESIS_GRID_R})")
    dl.add_argument("--seed", type=int, default=0, help="seed of the sorted-uniform start")
    _add_xi_args(dl)
    dl.add_argument("--json", action="store_true", help="print one JSON object")
    dl.set_defaults(func=_cmd_dual)

    x = sub.add_parser("decompress", help="compressed file → plain state_dict file")
    x.add_argument("file")
    x.add_argument("--out", default=None)
    x.set_defaults(func=_cmd_decompress)

    e = sub.add_parser("evaluate", help="accuracy and size of a checkpoint or compressed file")
    e.add_argument("path")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_cmd_evaluate)
    ex = sub.add_parser("export", help="compressed file → its decoded network as ONNX (needs the onnx extra)")
    ex.add_argument("file", help="a compressed model file (.mtq)")
    ex.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    ex.add_argument("--with-preprocessing", action="store_true",
                    help="put the input normalisation into the graph (it then takes images in [0, 1]); "
                         "default: the bare network, fed normalised images as `evaluate` feeds it")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.set_defaults(func=_cmd_export)
    b = sub.add_parser("batch", help="run notebooks with parameter sets (papermill, on Dask) into runs/; "
                       "resumes an earlier run of the same batch")
    b.add_argument("file", help="batch file (JSON), see metaq_utils/batch.py")
    b.add_argument("--runs-dir", default="runs")
    b.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's)")
    b.add_argument("--dry-run", action="store_true", help="list the runs (and which are done) without executing them")
    b.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run on this existing Dask cluster (default: a local cluster started for the batch)")
    b.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of the local cluster, one thread each (default: one per core)")
    b.set_defaults(func=_cmd_batch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # the command as typed, for the run's record
    import torch
    torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:   # CheckpointError, CompressedFileError, bad arguments
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
