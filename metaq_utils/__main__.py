"""Command line: ``python -m metaq_utils <command>``.

Commands: ``data`` (obtain and verify MNIST), ``train`` (train a network, save the best
checkpoint), ``evaluate PATH`` (accuracy and size of a checkpoint).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_data(args) -> int:
    from .data import ensure_mnist
    source = ensure_mnist(args.root, verbose=not args.quiet)
    if not args.quiet or source != "existing":
        print(f"MNIST ready under {args.root} (source: {source})")
    return 0


def _cmd_train(args) -> int:
    import torch
    from .data import load_mnist
    from .training import TrainConfig, make_model, train
    torch.set_num_threads(args.threads)
    config = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer, weight_decay=args.weight_decay,
                         augment=not args.no_augment, seed=args.seed, lr_schedule=args.lr_schedule)
    data = load_mnist(args.root)
    model = make_model(config)
    result = train(model, data, config, best_path=args.out, checkpoint_path=args.checkpoint,
                   resume=args.resume, progress=not args.quiet)
    best = max(result.history, key=lambda r: r["test_accuracy"])
    print(f"final test accuracy {100 * result.final['test_accuracy']:.2f} % after {result.final['epoch']} epochs; "
          f"best {100 * best['test_accuracy']:.2f} % at epoch {best['epoch']} saved to {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    import torch
    from .checkpoints import load_checkpoint
    from .data import load_mnist
    from .training import evaluate
    torch.set_num_threads(args.threads)
    path = Path(args.path)
    ckpt = load_checkpoint(path)
    model = ckpt.build_model()
    file_bits = path.stat().st_size * 8
    data = load_mnist(args.root, verbose=False)
    acc = evaluate(model, data.test_x, data.test_y)["accuracy"]
    out = {"path": str(path), "arch": ckpt.arch, "accuracy": acc, "file_bits": file_bits,
           "n_params": ckpt.n_params, "compression_ratio": 32 * ckpt.n_params / file_bits}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{path}: {ckpt.arch}, test accuracy {100 * acc:.2f} %, {file_bits:,} bits "
              f"({out['compression_ratio']:.2f}× against {32 * ckpt.n_params:,} bits of float32)")
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

    t = sub.add_parser("train", help="train a network without the entropy term")
    t.add_argument("--arch", default="lenet5", choices=["lenet5", "lenet300100"])
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    t.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="BestModelsBeforeQuantization/lenet5_plain.pt",
                   help="where the best checkpoint goes")
    t.add_argument("--checkpoint", default=None, help="last-epoch checkpoint (for --resume)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy and size of a checkpoint")
    e.add_argument("path")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
