"""Where full fine-tuning gets its frames: decoding each video's sampled frames from the source file in every epoch,
or reading the JPEG frames ingest kept (`--keep-frames`). Measures, per video: decode seconds, JPEG bytes and
encode/decode seconds per quality, the pixel error JPEG adds, and a batch's read from a `frame_images` table.

Usage: python -m benchmarks.frame_source --root /tmp/frame-source [--duration 120 --width 640 --height 360]
       [--photo some.jpg]   # also the JPEG size of a real photograph's 224-px crop, to calibrate the clip's

The clip is generated (ffmpeg's moving test pattern with temporal noise, H.264 at CRF 28: roughly the bitrate of a
web video), so its frames compress more easily than natural ones; `--photo` says by how much.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ffmpeg
import numpy as np

from benchmarks.entry import measure_and_report
from schemas.catalog import Catalog, scan_row_ids, take_rows
from schemas.rows import frame_images_table
from schemas.store import StoreConfig
from schemas.tables import FRAME_IMAGES, VIDEO_OK
from workers.ingest.decode import decode_frames
from workers.ingest.encode import as_object_lists
from workers.ingest.frame_images import decode_jpegs, encode_jpegs
from workers.ingest.sampling import SamplingConfig


def make_clip(path: Path, duration: float, width: int, height: int, fps: int) -> Path:
    """A moving test pattern with temporal noise, H.264 (written once)."""
    if not path.exists():
        source = ffmpeg.input(f"testsrc2=size={width}x{height}:rate={fps}:duration={duration}", f="lavfi")
        stream = source.filter("noise", alls=6, allf="t").output(
            str(path), vcodec="libx264", preset="veryfast", crf=28, pix_fmt="yuv420p"
        )
        stream.global_args("-loglevel", "error").overwrite_output().run()
    return path


def timed(function, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls, and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def photo_frame(path: str, size: int) -> np.ndarray:
    """A photograph scaled and centre-cropped to `size` the way the decode stage crops video frames."""
    raw, _ = (
        ffmpeg.input(path)
        .filter("scale", size, size, force_original_aspect_ratio="increase", flags="bicubic")
        .filter("crop", size, size)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", vframes=1)
        .global_args("-loglevel", "error")
        .run(capture_stdout=True)
    )
    return np.frombuffer(raw, dtype=np.uint8).reshape(1, size, size, 3)


def table_read(frames: np.ndarray, mask: np.ndarray, quality: int, videos: int, batch: int, size: int) -> float:
    """Seconds per video to take a random batch's rows from a `frame_images` table of `videos` rows and decode
    them (the training reader's work per video)."""
    jpegs = encode_jpegs(frames, mask, quality)
    with tempfile.TemporaryDirectory() as folder:
        catalog = Catalog(StoreConfig(folder))
        rows = {
            "video_id": np.array([f"v{i:06d}" for i in range(videos)]),
            "status": np.array([VIDEO_OK] * videos),
            "frame_mask": np.repeat(mask[None], videos, axis=0),
            "jpeg": as_object_lists([jpegs] * videos),
        }
        catalog.merge(FRAME_IMAGES, frame_images_table(rows, "{}", "bench", size, quality, "bench"))
        table = catalog.snapshot(FRAME_IMAGES)
        ids = scan_row_ids(table, ["video_id"])["_rowid"].to_numpy()
        generator = np.random.default_rng(0)

        def read() -> None:
            taken = take_rows(table, generator.choice(ids, batch, replace=False), ["jpeg", "frame_mask"])
            for stored, stored_mask in zip(taken["jpeg"].to_pylist(), taken["frame_mask"].to_pylist(), strict=True):
                decode_jpegs(stored, np.array(stored_mask), size)

        seconds, _ = timed(read, 5)
    return seconds / batch


def run(args: argparse.Namespace) -> dict:
    """Every measurement of one clip, as a JSON-ready dict."""
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"clip-{args.duration:g}s-{args.width}x{args.height}.mp4"
    clip = make_clip(root / name, args.duration, args.width, args.height, args.fps)
    sampling = SamplingConfig("fps", args.frames, 1.0)
    decode_s, decoded = timed(lambda: decode_frames(clip, sampling, args.image_size), args.repeats)
    frames, mask = decoded.frames, decoded.mask
    result = {
        "clip": {"seconds": args.duration, "width": args.width, "height": args.height, "fps": args.fps},
        "frames": int(mask.sum()),
        "image_size": args.image_size,
        "decode_from_source_s": round(decode_s, 3),
        "raw_uint8_kb": round(frames[mask].nbytes / 1024),
        "jpeg": [],
    }
    for quality in args.qualities:
        encode_s, jpegs = timed(lambda quality=quality: encode_jpegs(frames, mask, quality), args.repeats)
        decode_jpeg_s, back = timed(lambda jpegs=jpegs: decode_jpegs(jpegs, mask, args.image_size), args.repeats)
        error = np.abs(back[mask].astype(np.float32) - frames[mask].astype(np.float32)).mean()
        row = {
            "quality": quality,
            "kb_per_video": round(sum(len(j) for j in jpegs) / 1024, 1),
            "encode_s": round(encode_s, 4),
            "decode_s": round(decode_jpeg_s, 4),
            "mean_abs_error": round(float(error), 2),
            "table_read_s_per_video": round(
                table_read(frames, mask, quality, args.table_videos, args.batch, args.image_size), 4
            ),
        }
        if args.photo:
            photo = photo_frame(args.photo, args.image_size)
            row["photo_kb_per_frame"] = round(len(encode_jpegs(photo, np.ones(1, bool), quality)[0]) / 1024, 1)
        result["jpeg"].append(row)
    return result


def to_markdown(result: dict) -> str:
    """The measurements as one Markdown table."""
    clip = result["clip"]
    lines = [
        f"Clip: {clip['seconds']:g} s, {clip['width']}x{clip['height']} at {clip['fps']} fps; "
        f"{result['frames']} frames at {result['image_size']} px. Decoding them from the file: "
        f"{result['decode_from_source_s']:.2f} s. As raw uint8: {result['raw_uint8_kb']} KB.",
        "",
        "| JPEG quality | KB per video | encode s | decode s | table read + decode s/video | mean abs error | "
        "photo KB/frame |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["jpeg"]:
        lines.append(
            f"| {row['quality']} | {row['kb_per_video']} | {row['encode_s']} | {row['decode_s']} | "
            f"{row['table_read_s_per_video']} | {row['mean_abs_error']} | {row.get('photo_kb_per_frame', '-')} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="glscl bench frame-source", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder for the generated clip")
    parser.add_argument("--duration", type=float, default=120.0, help="clip seconds (default 120, ActivityNet-like)")
    parser.add_argument("--width", type=int, default=640, help="clip width (default 640)")
    parser.add_argument("--height", type=int, default=360, help="clip height (default 360)")
    parser.add_argument("--fps", type=int, default=30, help="clip frame rate (default 30)")
    parser.add_argument("--frames", type=int, default=64, help="frames sampled, 1 per second (default 64)")
    parser.add_argument("--image-size", type=int, default=224, help="backbone input size (default 224)")
    parser.add_argument("--qualities", type=int, nargs="+", default=[75, 90, 95], help="JPEG qualities")
    parser.add_argument("--table-videos", type=int, default=256, help="rows of the frame_images table read from")
    parser.add_argument("--batch", type=int, default=8, help="videos per read (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default 3)")
    parser.add_argument("--photo", default=None, help="a photograph whose 224-px crop's JPEG size is reported")
    parser.add_argument("--out", default=None, help="JSON file to write the measurements to")
    return parser


def main(argv: list[str] | None = None) -> str:
    """Command-line entry: the measurements as Markdown (and JSON with --out)."""
    return measure_and_report(build_parser(), run, to_markdown, argv)


if __name__ == "__main__":
    print(main())
