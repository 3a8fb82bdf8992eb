"""``maven-fast predict VIDEO ... --transcript FILE --checkpoint C``: valence/arousal per segment and frame."""
from __future__ import annotations

import argparse

HELP = "predict valence/arousal of videos with transcripts from a trained checkpoint (CSV, PNG)"
DESCRIPTION = """\
Run the frozen encoders and a trained MAVEN checkpoint over videos: frames and
the audio track are decoded from each file (fps from the container, audio at
16 kHz; a video without audio gets silence and a warning), the transcript is
segmented as `maven-fast extract` does, every segment is encoded exactly as
extract caches it, and the model predicts every frame. Writes, per video:

  OUT/<video>.segments.csv   file,start_s,end_s,text,valence,arousal (mean over the segment's frames)
  OUT/<video>.frames.csv     file,frame,time_s,valence,arousal (one row per video frame, 1-based;
                             empty values on frames no segment covers)
  OUT/<video>.png            with --plot: valence/arousal over time, and the circumplex trajectory
  OUT/predict_report.json    every video's status, outputs and reported problems

The encoders are the ones the checkpoint was trained with (its manifest
names them). Segmentation settings not given follow the training cache's
when it is readable, else extract's defaults. A bad video is listed at the
end and the others go on (exit status 1).

The encoders compute at the precision the checkpoint's training features were
made at (--compute-dtype auto); another one is refused unless
--allow-compute-dtype-mismatch. Frames and audio are decoded ahead of the
encoders in a background thread (--prefetch). A checkpoint trained on
`base-random` encoders (random weights, for benchmarks) is refused unless
--benchmark-random-encoders.

examples:
  maven-fast predict talk.mp4 --transcript talk.srt --checkpoint runs/maven/checkpoints/best --plot
  maven-fast predict a.mp4 b.mp4 --transcript a.vtt --transcript b.json --checkpoint runs/maven --out preds
  HF_HUB_OFFLINE=1 maven-fast predict talk.mp4 --transcript talk.txt --checkpoint C \\
      --video-encoder /models/swin --audio-encoder /models/hubert --text-encoder /models/roberta
"""


def add_arguments(parser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video file(s) (anything FFmpeg reads)")
    parser.add_argument("--transcript", action="append", default=[], metavar="FILE",
                        help="transcript (MAVEN .txt, SRT, WebVTT, Whisper JSON/TSV): once per video in the "
                             "same order, or once for all videos")
    parser.add_argument("--checkpoint", metavar="C",
                        help="trained checkpoint: runs/NAME/checkpoints/{best,last}, or a run directory "
                             "(uses last). Required: predict never runs random weights")
    parser.add_argument("--out", default="predictions", metavar="DIR", help="output folder (default predictions)")
    parser.add_argument("--plot", action="store_true", help="also write OUT/<video>.png")
    parser.add_argument("--mode", choices=("contiguous", "exact"), default=None,
                        help="segmentation: contiguous [end_k-1, end_k] as MAVEN, or exact [start_k, end_k] "
                             "(default: the training cache's, else contiguous)")
    parser.add_argument("--tail", action=argparse.BooleanOptionalAction, default=None,
                        help="contiguous mode: also predict the frames after the last utterance "
                             "(a segment with empty text); --no-tail leaves them empty "
                             "(default: the training cache's, else no tail)")
    parser.add_argument("--encoders", choices=("auto", "tiny", "base"), default="auto",
                        help="auto: build the encoders the checkpoint names (default); tiny / base: also "
                             "check that it used the tiny / the paper's encoders")
    parser.add_argument("--video-encoder", metavar="PATH", help="local copy of the checkpoint's video encoder")
    parser.add_argument("--audio-encoder", metavar="PATH", help="local copy of the checkpoint's audio encoder")
    parser.add_argument("--text-encoder", metavar="PATH", help="local copy of the checkpoint's text encoder")
    parser.add_argument("--backend", default="auto", choices=("auto", "eager", "cpu", "cuda", "triton"),
                        help="model implementation (default auto; eager: the pure-PyTorch reference)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    parser.add_argument("--max-audio-seconds", type=float, default=None,
                        help="encode longer segment audio in windows of this length (default: the "
                             "training cache's, else 30)")
    parser.add_argument("--batch-size", type=int, default=8, help="segments per audio/text encoder batch "
                                                                  "(default 8, as extract)")
    parser.add_argument("--frame-batch", type=int, default=64, help="frames per video encoder batch "
                                                                    "(default 64, as extract)")
    parser.add_argument("--compute-dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="precision the encoders compute in (default auto: the one the checkpoint's "
                             "training features were made at)")
    parser.add_argument("--allow-compute-dtype-mismatch", action="store_true",
                        help="accept a --compute-dtype other than the checkpoint's")
    parser.add_argument("--benchmark-random-encoders", action="store_true",
                        help="run a checkpoint trained on base-random encoders (random weights): "
                             "for timing the pipeline only, the predictions mean nothing")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders (slow first batches)")
    parser.add_argument("--prefetch", type=int, default=4,
                        help="frame chunks / segment waveforms decoded ahead in a background thread "
                             "(default 4; 0: decode inline)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    import sys

    from maven_fast.predict.batch import check_unique_stems, pair_transcripts, predict_files
    from maven_fast.predict.predictor import NO_CHECKPOINT_MESSAGE, Predictor

    if not args.checkpoint:
        print(f"maven-fast predict: error: {NO_CHECKPOINT_MESSAGE}", file=sys.stderr)
        return 2
    pairs = pair_transcripts(list(args.videos), list(args.transcript))
    check_unique_stems([video for video, _ in pairs])
    predictor = Predictor.from_checkpoint(
        args.checkpoint, encoders=args.encoders, video_encoder=args.video_encoder,
        audio_encoder=args.audio_encoder, text_encoder=args.text_encoder, backend=args.backend,
        device=args.device, compute_dtype=args.compute_dtype,
        allow_compute_dtype_mismatch=args.allow_compute_dtype_mismatch,
        allow_random_encoders=args.benchmark_random_encoders, compile=args.compile,
        mode=args.mode, tail=args.tail, max_audio_seconds=args.max_audio_seconds,
        batch_size=args.batch_size, frame_batch=args.frame_batch, prefetch=args.prefetch)
    for line in predictor.describe():
        print(line)
    result = predict_files(predictor, pairs, args.out, plot=args.plot, progress=not args.no_progress)
    for video, paths in result.done.items():
        issues = result.issues.get(video, [])
        note = f" ({len(issues)} issue(s) reported, see {result.report_path})" if issues else ""
        print(f"{video}: {', '.join(paths.values())}{note}")
    print(f"predict: {len(result.done)} video(s) done, {len(result.failed)} failed; report {result.report_path}")
    if result.failed:
        print(f"\n{len(result.failed)} video(s) could not be predicted:", file=sys.stderr)
        for video, reason in result.failed.items():
            print(f"  {video}: {reason}", file=sys.stderr)
        return 1
    return 0
