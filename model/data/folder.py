"""A folder of captioned videos as training data.

The folder holds video files and a `captions.jsonl` with one JSON object per line,
`{"file": "clip.mp4", "caption": "..."}`. Videos of any resolution, aspect ratio
and duration are used whole: each side is scaled to the nearest multiple of 16
(keeping the aspect ratio, never cropping), and the frame count is trimmed to
1 + 4k, the lengths the causal autoencoder takes.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif"}


def target_size(width: int, height: int, max_side: int | None = None) -> tuple[int, int]:
    """(W, H) with each side the nearest multiple of 16, after an optional downscale so that neither exceeds max_side."""
    scale = 1.0
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)

    def side(pixels: float) -> int:
        rounded = max(16, int(np.floor(pixels / 16 + 0.5)) * 16)  # halves round up
        return min(rounded, max_side // 16 * 16) if max_side is not None else rounded

    return side(width * scale), side(height * scale)


class VideoFolderDataset:
    """(video uint8 (T, H, W, 3), caption) for each captioned video in a folder.

    fps: when set, frames are resampled to this rate (nearest frame in time)
    before trimming. max_frames: when set, longer clips keep their first
    max_frames (rounded down to 1 + 4k). max_side: when set, videos are scaled
    down so that no side exceeds it.
    """

    def __init__(self, root, fps: float | None = None, max_frames: int | None = None, max_side: int | None = None):
        self.root = Path(root)
        self.fps, self.max_frames, self.max_side = fps, max_frames, max_side
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        if max_side is not None and max_side < 16:
            raise ValueError(f"max_side must be at least 16, got {max_side}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"video folder {self.root} does not exist")
        captions_path = self.root / "captions.jsonl"
        if not captions_path.is_file():
            raise FileNotFoundError(f"{captions_path} is missing: the folder needs one JSON line per video, "
                                    '{"file": ..., "caption": ...}')
        self.items: list[tuple[Path, str]] = []
        captioned = set()
        for number, line in enumerate(captions_path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{captions_path}, line {number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise ValueError(f'{where}: expected an object with a "file" string')
            text = entry.get("caption")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: {entry['file']} has no caption")
            path = (self.root / entry["file"]).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"{where}: video {entry['file']} not found in {self.root}")
            self.items.append((path, text.strip()))
            captioned.add(path)
        uncaptioned = sorted(p.name for p in self.root.iterdir()
                             if p.suffix.lower() in VIDEO_SUFFIXES and p.resolve() not in captioned)
        if uncaptioned:
            raise ValueError(f"{captions_path} has no caption for: {', '.join(uncaptioned)}")
        if not self.items:
            raise ValueError(f"{captions_path} lists no videos")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        path, text = self.items[index]
        return self.load(path), text

    def __iter__(self) -> Iterator[tuple[np.ndarray, str]]:
        for index in range(len(self)):
            yield self[index]

    def load(self, path: Path) -> np.ndarray:
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError(f"{path} has no video stream")
                stream = container.streams.video[0]
                width, height = target_size(stream.codec_context.width, stream.codec_context.height, self.max_side)
                frames, times = [], []
                for frame in container.decode(stream):
                    times.append(float(frame.time) if frame.time is not None else len(times) / _rate(stream))
                    # swscale resizes while converting; area averaging keeps thin edges when shrinking.
                    frames.append(frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA"))
                    if self.has_enough(times):
                        break
        except av.FFmpegError as error:
            raise ValueError(f"cannot decode video {path}: {error}") from None
        if not frames:
            raise ValueError(f"{path} has no frames")
        if self.fps is not None:
            frames = [frames[i] for i in _resample(np.asarray(times), self.fps)]
        count = len(frames)
        if self.max_frames is not None:
            count = min(count, self.max_frames)
        count = 1 + (count - 1) // 4 * 4
        return np.stack(frames[:count])

    def has_enough(self, times: list[float]) -> bool:
        """Whether the frames decoded so far hold every frame the clip keeps (long videos stop early)."""
        if self.max_frames is None:
            return False
        if self.fps is None:
            return len(times) >= self.max_frames
        # One output interval past the last kept time, so the frame nearest to it has been seen.
        return times[-1] - times[0] >= self.max_frames / self.fps


def _rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or Fraction(8)
    return float(rate)


def _resample(times: np.ndarray, fps: float) -> list[int]:
    """Indices of the frames nearest to t0, t0 + 1/fps, ... over the clip."""
    start, end = times.min(), times.max()
    targets = start + np.arange(int(np.floor((end - start) * fps + 1e-6)) + 1) / fps
    return [int(np.argmin(np.abs(times - t))) for t in targets]
