"""Seconds from a prompt to a finished video: uint8 frames, and MP4 bytes.

The default is the service's common request: 64x64, 2 seconds (17 frames at
8 fps), the model's default steps, sampler and guidance (FlowConfig). The goal
on a 2-core CPU is at most 3 s per video. Each run sends a prompt the text
encoder has not cached, so text encoding is included.

    python benchmarks/end_to_end.py                                   # shapes-s10 (the bundled preset), random weights
    python benchmarks/end_to_end.py --model weights/reel-shapes-v1 --steps 10,20,30 --sampler euler,heun

With --steps / --sampler lists it prints one row per combination (the speed
half of a quality-vs-speed table; the quality half needs the trained model and
is measured elsewhere). fp32, torch.set_num_threads(2) unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, load_average, machine_line, markdown_table, stamp, text_table, write_section  # noqa: E402

PROMPTS = [
    "a red circle moving left on a blue background",
    "a small green square moving up on a white background",
    "a large yellow triangle bouncing on a black background",
    "a blue circle growing on a gray background",
    "a purple square moving right on a yellow background",
    "an orange triangle shrinking on a green background",
]
GOAL_SECONDS = 3.0


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"steps must be positive integers, got {text!r}")
    return values


def sampler_list(text: str) -> list[str]:
    values = [v for v in text.split(",") if v]
    bad = [v for v in values if v not in ("euler", "heun")]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"samplers are 'euler' or 'heun', got {text!r}")
    return values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory, named checkpoint or preset (default: shapes-s10, random weights)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int_list, help="comma-separated step counts (default: the model's)")
    parser.add_argument("--sampler", type=sampler_list, help="comma-separated samplers (default: the model's)")
    parser.add_argument("--guidance", type=float, help="default: the model's")
    parser.add_argument("--repeats", type=int, default=5, help="timed videos per row (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-results", action="store_true", help="replace the end-to-end section of RESULTS.md")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    torch.set_num_threads(args.threads)
    from model import TextToVideo, VideoSpec
    from worker.media import encode_mp4

    load_start = os.getloadavg()
    started = time.perf_counter()
    pipe = TextToVideo.load(args.model) if args.model else TextToVideo.from_preset("shapes-s10")
    model_name = args.model or "shapes-s10 (random weights)"
    flow = pipe.config.flow
    steps_list = args.steps or [flow.steps]
    samplers = args.sampler or [flow.sampler]
    print(f"model {model_name}; {machine_line(args.threads)}; load average {load_average()}")

    # Warm-up: one-time allocations, rotary tables, the codec library.
    warm = VideoSpec(PROMPTS[0], width=args.width, height=args.height, frames=args.frames, steps=1)
    pipe.validate(warm)
    encode_mp4(pipe.generate([warm])[0], fps=pipe.config.fps)

    header = ["clip WxHxT", "sampler", "steps", "guidance", "-> frames median s", "min s", "-> MP4 median s",
              "MP4 encode s", f"<= {GOAL_SECONDS:g} s", "load 1/5/15"]
    rows = []
    prompt_index = 0
    for sampler in samplers:
        for steps in steps_list:
            frames_times, mp4_times, encode_times = [], [], []
            for _ in range(args.repeats):
                prompt = PROMPTS[prompt_index % len(PROMPTS)]
                prompt_index += 1
                # A request's prompt is normally a text-encoder cache miss; make it one here.
                pipe.text._cache.clear()
                spec = VideoSpec(prompt, width=args.width, height=args.height, frames=args.frames,
                                 steps=steps, guidance=args.guidance)
                start = time.perf_counter()
                frames = pipe.generate([spec], sampler=sampler)[0]
                made = time.perf_counter()
                data = encode_mp4(frames, fps=pipe.config.fps)
                done = time.perf_counter()
                assert frames.shape == (args.frames, args.height, args.width, 3) and data[4:8] == b"ftyp"
                frames_times.append(made - start)
                encode_times.append(done - made)
                mp4_times.append(done - start)
            to_frames = statistics.median(frames_times)
            to_mp4 = statistics.median(mp4_times)
            guidance = flow.guidance if args.guidance is None else args.guidance
            rows.append([
                f"{args.width}x{args.height}x{args.frames}", sampler, steps, guidance, f"{to_frames:.2f}",
                f"{min(frames_times):.2f}", f"{to_mp4:.2f}", f"{statistics.median(encode_times):.3f}",
                "yes" if to_mp4 <= GOAL_SECONDS else "no", load_average(),
            ])
            print(text_table(header, [rows[-1]]))

    elapsed = time.perf_counter() - started
    print(f"done in {elapsed:.0f} s; load average {load_average()}")
    if args.write_results:
        body = [
            "## End to end: prompt -> frames -> MP4",
            "",
            f"- Taken {stamp()} with `{command_line()}` ({elapsed:.0f} s).",
            f"- Model: {model_name}. Machine: {machine_line(args.threads)}. fp32.",
            f"- Load average (1/5/15 min) at the start: {load_start[0]:.2f} / {load_start[1]:.2f} / "
            f"{load_start[2]:.2f}; at the end: {load_average()}.",
            f"- Median of {args.repeats} videos per row after one warm-up, a different prompt each time with the "
            "text-encoder cache emptied (text encoding included). `-> frames`: `TextToVideo.generate` "
            "(text, sampling with guidance in one packed pass per step, VAE decode, uint8); `-> MP4`: the same "
            "plus `worker.media.encode_mp4` (H.264). Goal: <= 3 s to MP4.",
            "",
            markdown_table(header, rows),
        ]
        write_section("end-to-end" + ("" if args.threads == 2 else f"-threads{args.threads}"), "\n".join(body))
        print("wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
