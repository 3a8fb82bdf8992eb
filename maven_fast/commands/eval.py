"""``maven-fast eval``: metrics of a trained checkpoint on a cached split."""
from __future__ import annotations

import json

HELP = "evaluate a checkpoint on a cached split (per-frame CCC_v, CCC_a, P)"
DESCRIPTION = """\
  maven-fast eval runs/NAME/checkpoints/best CACHE_DIR [--split Validation_Set]
                 [--submission out.csv [--frame-list organisers_list.txt]]

CCC (Lin 1989) per frame, pooled in float64 over every valid frame of the split
(frames labelled -5 and frames without an image are excluded); P = (CCC_v +
CCC_a) / 2. --submission writes an ABAW file (image_location,valence,arousal),
interpolating frames that have no prediction."""


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint directory or a run directory (uses checkpoints/last)")
    parser.add_argument("cache", help="feature cache directory (maven-fast extract)")
    parser.add_argument("--split", default="val", help="cache split (default: val)")
    parser.add_argument("--backend", default="auto", choices=["auto", "eager", "cpu", "cuda", "triton"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--submission", help="write an ABAW submission file here")
    parser.add_argument("--frame-list", help="the organisers' frame list for the submission")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--allow-compute-dtype-mismatch", action="store_true",
                        help="evaluate on a cache made at another encoder precision than the checkpoint's "
                             "training cache (e.g. to measure what bf16 features do to a trained model)")


def run(args) -> int:
    from maven_fast.train.api import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.cache, args.split, args.backend, args.batch_size,
                                  args.submission, args.frame_list,
                                  allow_compute_dtype_mismatch=args.allow_compute_dtype_mismatch)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{args.split}: CCC_v {metrics['ccc_v']:.4f}  CCC_a {metrics['ccc_a']:.4f}  P {metrics['P']:.4f}  "
              f"(MSE {metrics['loss']:.4f} over {metrics['frames']} frames)")
        if args.submission:
            print(f"submission written to {args.submission}")
            for note in metrics.get("submission_notes", []):
                print(f"  note: {note}")
    return 0
