"""``maven-fast synth OUT_DIR``: write a small synthetic Aff-Wild2-shaped dataset."""
from __future__ import annotations

HELP = "write a small synthetic Aff-Wild2-shaped dataset (MP4 + AAC, crops, labels, transcripts)"
DESCRIPTION = """\
Write a small Aff-Wild2-shaped dataset whose valence/arousal is carried by the
signals, so the whole pipeline (extract, train, evaluate, predict) can be run,
and learning checked, without the licensed dataset:

  OUT_DIR/videos/{batch1,batch2,test}/<video>.mp4      H.264 + AAC (24 kHz)
  OUT_DIR/cropped_aligned/<name>/00001.jpg ...          a few images missing
  OUT_DIR/annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<name>.txt
                                                        'valence,arousal', some -5 lines
  OUT_DIR/transcripts/<video>.{txt,srt,vtt,json,tsv}    every supported format
  OUT_DIR/test_frame_list.txt                           organiser-style frame list
  OUT_DIR/synth_info.json                               what was written, per person

Each split also has a two-person video annotated as <video>_left / <video>_right.
The output is a deterministic function of --seed.

example:
  maven-fast synth /tmp/synth --videos-per-split 2 --frames 120
  maven-fast extract /tmp/synth /tmp/synth-cache --encoders tiny
"""


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--videos-per-split", type=int, default=3,
                        help="single-person videos per split, plus one two-person video (default 3)")
    parser.add_argument("--frames", type=int, default=240,
                        help="frames per video, give or take 20%% (default 240)")
    parser.add_argument("--size", type=int, default=96, help="frame width/height in pixels (default 96)")
    parser.add_argument("--fps", type=int, default=30,
                        help="frame rate (default 30; one video per split then uses 30000/1001)")
    parser.add_argument("--test-videos", type=int, default=1,
                        help="unannotated test videos (default 1)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")


def run(args) -> int:
    import os
    import sys
    import time

    from maven_fast.data.synth import make_synthetic_dataset

    if os.path.isdir(args.out_dir) and os.listdir(args.out_dir) and not args.force:
        print(f"error: {args.out_dir} is not empty; choose another folder or pass --force",
              file=sys.stderr)
        return 2
    began = time.perf_counter()
    try:
        people = make_synthetic_dataset(args.out_dir, seed=args.seed,
                                        videos_per_split=args.videos_per_split, frames=args.frames,
                                        size=args.size, fps=args.fps, test_videos=args.test_videos)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    by_split: dict[str, int] = {}
    for p in people:
        by_split[p.split] = by_split.get(p.split, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in by_split.items())
    print(f"wrote {len(people)} annotated people ({summary}) to {args.out_dir} "
          f"in {time.perf_counter() - began:.1f}s")
    return 0
