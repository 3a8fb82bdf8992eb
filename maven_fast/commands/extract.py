"""``maven-fast extract DATA_ROOT CACHE_DIR``: run the frozen encoders once, cache features."""
from __future__ import annotations

HELP = "run the frozen encoders once over every segment and cache the features (safetensors)"
DESCRIPTION = """\
Run the frozen video/audio/text encoders once over every segment of an
Aff-Wild2-shaped dataset (see `maven-fast synth`) and write one safetensors
shard per annotated person plus CACHE_DIR/index.json; training reads the cache.

Resumable: shards already written with the same encoders and settings are
skipped, so a killed run is simply started again. A video that cannot be
extracted is listed at the end (and in the index) and the others go on; the
exit status is then 1.

Under torchrun each rank takes its share of the videos; the last rank to
finish writes the index (no process group needed):
  torchrun --nproc-per-node 4 -m maven_fast extract DATA CACHE --encoders base

The encoders compute in --compute-dtype (auto: bf16 where the hardware is fast
at it, i.e. a CPU with AVX512-BF16 or AMX or a GPU of sm_80+, else fp32; the
choice is printed and recorded in the cache, and resuming a cache made at
another precision is refused). Frames and audio are decoded ahead of the
encoders in a background thread (--prefetch items).

examples:
  maven-fast extract /data/affwild2 /data/cache --encoders base
  maven-fast extract /data/affwild2 /data/cache --encoders base --compute-dtype bfloat16
  maven-fast extract /tmp/synth /tmp/cache --encoders tiny --splits train val --mode exact
  maven-fast extract /tmp/synth /tmp/cache-test --encoders tiny --splits test \
      --test-list /tmp/synth/test_frame_list.txt
  HF_HUB_OFFLINE=1 maven-fast extract DATA CACHE --video-encoder /models/swin
"""


def add_arguments(parser) -> None:
    parser.add_argument("data_root", metavar="DATA_ROOT", help="dataset folder (Aff-Wild2 layout)")
    parser.add_argument("cache_dir", metavar="CACHE_DIR", help="where to write the feature cache")
    parser.add_argument("--encoders", choices=("tiny", "base", "base-random"), default="base",
                        help="'base': Swin/HuBERT/RoBERTa of the paper; 'tiny': random tiny ones "
                             "for tests; 'base-random': the paper's architectures at full size with random "
                             "weights, no hub (benchmarks only) (default base)")
    parser.add_argument("--compute-dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="precision the encoders compute in (default auto: bfloat16 where the CPU/GPU "
                             "runs it fast, else float32); recorded in the cache")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders (slow first batches)")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="keep the video encoder's default memory layout")
    parser.add_argument("--prefetch", type=int, default=4,
                        help="frame chunks / segment waveforms decoded ahead in a background thread "
                             "(default 4; 0: decode inline)")
    parser.add_argument("--video-encoder", help="hub name or local directory replacing the video encoder")
    parser.add_argument("--audio-encoder", help="hub name or local directory replacing the audio encoder")
    parser.add_argument("--text-encoder", help="hub name or local directory replacing the text encoder")
    parser.add_argument("--splits", nargs="+", default=["train", "val"],
                        choices=("train", "val", "test"), help="splits to extract (default train val)")
    parser.add_argument("--test-list", metavar="FILE",
                        help="the organisers' list of test videos, or their frame list "
                             "(needed for --splits test)")
    parser.add_argument("--mode", choices=("contiguous", "exact"), default="contiguous",
                        help="segmentation: contiguous [end_k-1, end_k] as MAVEN (default), or exact "
                             "[start_k, end_k]")
    parser.add_argument("--tail", action="store_true",
                        help="contiguous mode: also a segment after the last utterance")
    parser.add_argument("--frames-source", choices=("auto", "folder", "video"), default="auto",
                        help="frame images: crop folder when present (auto), or always folder / video")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="segments per audio/text encoder batch (default 8)")
    parser.add_argument("--frame-batch", type=int, default=64,
                        help="frames per video encoder batch (default 64)")
    parser.add_argument("--max-audio-seconds", type=float, default=30.0,
                        help="longer segment audio is encoded in windows of this length (default 30)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="storage type of the cached features (default float32)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda:LOCAL_RANK if "
                                         "available, else cpu)")
    parser.add_argument("--overwrite", action="store_true",
                        help="re-extract everything, even shards already written")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys

    import torch

    from maven_fast.data.extract import extract_features
    from maven_fast.data.report import DataError
    from maven_fast.encoders import load_encoders

    try:
        encoders = load_encoders(args.encoders, video=args.video_encoder, audio=args.audio_encoder,
                                 text=args.text_encoder)
        result = extract_features(
            args.data_root, args.cache_dir, encoders, splits=args.splits, mode=args.mode,
            tail=args.tail, test_list=args.test_list, batch_size=args.batch_size,
            frame_batch=args.frame_batch,
            max_audio_seconds=args.max_audio_seconds, frames_source=args.frames_source,
            dtype=getattr(torch, args.dtype), device=args.device, overwrite=args.overwrite,
            progress=not args.no_progress, compute_dtype=args.compute_dtype,
            channels_last=not args.no_channels_last, compile=args.compile, prefetch=args.prefetch)
    except (DataError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"encoders computed in {result.compute_dtype} ({getattr(encoders, 'precision_reason', '')})")
    print(f"extract: {len(result.written)} video(s) written, {len(result.skipped)} already done, "
          f"{len(result.failed)} failed, {len(result.report)} issue(s) reported, "
          f"{result.seconds:.1f}s")
    if result.index_path:
        print(f"index: {result.index_path}")
    else:
        print("index: not written yet (other ranks are still extracting; the last one writes it)")
    if result.failed:
        print(f"\n{len(result.failed)} video(s) could not be extracted:", file=sys.stderr)
        for name, reason in result.failed.items():
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    return 0
