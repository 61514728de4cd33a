"""Frames to files: an H.264 MP4 (faststart), a WebP thumbnail, a JPEG spritesheet.

Frames arrive as the pipeline returns them: uint8 (T, H, W, 3), RGB. A still
image (T = 1) is a one-frame MP4, like every other duration.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Assets:
    video: bytes  # video/mp4: H.264, yuv420p, moov atom before mdat
    thumbnail: bytes  # image/webp: the middle frame
    spritesheet: bytes  # image/jpeg: a row-major grid of evenly spaced frames


def check_frames(frames: np.ndarray) -> np.ndarray:
    """The frames as a contiguous uint8 (T, H, W, 3) array, or a ValueError saying what is wrong."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    count, height, width, _ = frames.shape
    if count < 1:
        raise ValueError("frames must hold at least one frame")
    # 4:2:0 chroma subsampling halves both sides, so they have to be even.
    if height % 2 or width % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    return np.ascontiguousarray(frames)


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int = 8, crf: int = 18) -> None:
    """Encode frames to an H.264 MP4 at `path`, with the moov atom first so browsers can start at once."""
    frames = check_frames(frames)
    _, height, width, _ = frames.shape
    # faststart rewrites the file after the mdat is written, so it needs a seekable real file.
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        # No B-frames: with them the muxer writes an edit list for the reordering delay,
        # and some decoders then drop or repeat the first frames. Every frame must come back out.
        stream.codec_context.options = {"crf": str(crf), "preset": "medium", "bf": "0"}
        stream.codec_context.time_base = Fraction(1, fps)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def encode_mp4(frames: np.ndarray, fps: int = 8, crf: int = 18) -> bytes:
    """The MP4 (see `write_mp4`) as bytes, by way of a temporary file."""
    with tempfile.TemporaryDirectory(prefix="reel-media-") as directory:
        path = Path(directory) / "video.mp4"
        write_mp4(frames, path, fps=fps, crf=crf)
        return path.read_bytes()


def thumbnail_webp(frames: np.ndarray, quality: int = 85) -> bytes:
    """The middle frame as a WebP image (the first, for a still image)."""
    frames = check_frames(frames)
    buffer = io.BytesIO()
    Image.fromarray(frames[len(frames) // 2]).save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()


def spritesheet_layout(frame_count: int, max_tiles: int = 36) -> tuple[list[int], int, int]:
    """Which frames go on the sheet (evenly spaced, first and last included) and its (columns, rows)."""
    tiles = min(frame_count, max_tiles)
    if tiles == 1:
        indices = [0]
    else:
        indices = [round(i * (frame_count - 1) / (tiles - 1)) for i in range(tiles)]
    columns = math.ceil(math.sqrt(tiles))
    rows = math.ceil(tiles / columns)
    return indices, columns, rows


def spritesheet_jpeg(frames: np.ndarray, max_tiles: int = 36, quality: int = 90) -> bytes:
    """Evenly spaced frames in a row-major grid, as a JPEG (for scrubbing previews)."""
    frames = check_frames(frames)
    count, height, width, _ = frames.shape
    indices, columns, rows = spritesheet_layout(count, max_tiles)
    sheet = np.zeros((rows * height, columns * width, 3), dtype=np.uint8)
    for tile, index in enumerate(indices):
        row, column = divmod(tile, columns)
        sheet[row * height : (row + 1) * height, column * width : (column + 1) * width] = frames[index]
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_assets(frames: np.ndarray, fps: int = 8) -> Assets:
    """Everything a finished job stores: the video, its thumbnail and its spritesheet."""
    frames = check_frames(frames)
    return Assets(video=encode_mp4(frames, fps=fps), thumbnail=thumbnail_webp(frames), spritesheet=spritesheet_jpeg(frames))


def decode_mp4(data: bytes | str | os.PathLike) -> np.ndarray:
    """Decode an MP4 back to uint8 (T, H, W, 3) RGB frames (for checks and tests)."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else str(data)
    with av.open(source) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
