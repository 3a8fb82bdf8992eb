"""``maven-fast train``: train MAVEN from a feature cache."""
from __future__ import annotations

HELP = "train MAVEN on cached features (single process or torchrun DDP)"
DESCRIPTION = """\
Train any preset (reference_mlp, reference_beit, paper) with any backend from
a feature cache written by `maven-fast extract`.

  maven-fast train CONFIG.yaml data.cache=cache/ run.epochs=20 model=paper
  maven-fast train CONFIG.yaml --resume              # continue runs/NAME exactly
  torchrun --nproc-per-node 2 -m maven_fast train CONFIG.yaml   # DDP (gloo on CPU, NCCL on GPU)

CONFIG.yaml holds the sections model (a preset name, or a mapping with an
optional `preset:` key plus overrides), data, optim and run (see
maven_fast/train/config.py for every key and its default); KEY=VALUE arguments
override it with dotted keys (run.batch_size=16, optim.lr=3e-4, model=paper).
Writes to run.out_dir: config.yaml, metrics.csv, tb/ (TensorBoard) and
checkpoints/{last,best}/ (safetensors + manifest)."""


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", help="training YAML (omit to use the defaults + overrides)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT (default: run.out_dir/checkpoints/last)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args) -> int:
    from maven_fast.train.api import train
    from maven_fast.train.config import TrainConfig

    config = args.config
    overrides = list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        overrides.insert(0, config)
        config = None
    cfg = TrainConfig.load(config, overrides)
    if args.print_config:
        print(cfg.to_yaml())
        return 0
    result = train(cfg, resume=args.resume)
    return 0 if result is not None else 1
