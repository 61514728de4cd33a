"""worker/media.py: encode with PyAV/libx264, decode with PyAV, and check what comes back."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
from PIL import Image

from worker import media


def moving_square(frames: int, width: int, height: int) -> np.ndarray:
    """A smooth clip (a bright square sliding right on a dark ground) that H.264 keeps close to the source."""
    video = np.full((frames, height, width, 3), (20, 30, 60), dtype=np.uint8)
    side = min(width, height) // 3
    for t in range(frames):
        left = (t * 2) % (width - side)
        top = (height - side) // 2
        video[t, top : top + side, left : left + side] = (230, 200, 40)
    return video


def top_level_boxes(data: bytes) -> list[str]:
    """The MP4's top-level box types in file order."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size < 8:
            break
        offset += size
    return boxes


@pytest.mark.parametrize(
    "frames,width,height",
    [(1, 64, 64), (9, 112, 64), (17, 64, 112), (33, 96, 96), (5, 32, 48)],
)
def test_mp4_round_trip_keeps_size_frame_count_and_format(frames, width, height):
    source = moving_square(frames, width, height)
    data = media.encode_mp4(source, fps=8)

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 8
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]

    assert len(decoded) == frames
    assert decoded[0].shape == (height, width, 3)
    # Lossy, but a smooth clip must come back close to what went in, frame by frame and in order.
    error = np.abs(np.stack(decoded).astype(np.int16) - source.astype(np.int16)).mean()
    assert error < 6, error


def test_mp4_is_faststart():
    boxes = top_level_boxes(media.encode_mp4(moving_square(17, 64, 64)))
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_still_image_is_a_one_frame_video():
    still = moving_square(1, 64, 64)
    decoded = media.decode_mp4(media.encode_mp4(still))
    assert decoded.shape == (1, 64, 64, 3)


def test_thumbnail_is_webp_of_the_middle_frame():
    source = moving_square(17, 64, 64)
    image = Image.open(io.BytesIO(media.thumbnail_webp(source)))
    assert image.format == "WEBP"
    assert image.size == (64, 64)
    pixels = np.asarray(image.convert("RGB")).astype(np.int16)
    # Closer to the middle frame than to the first one (the square has moved).
    middle_error = np.abs(pixels - source[8]).mean()
    first_error = np.abs(pixels - source[0]).mean()
    assert middle_error < first_error


def test_spritesheet_is_a_jpeg_grid_of_frames():
    source = moving_square(17, 64, 48)
    indices, columns, rows = media.spritesheet_layout(17)
    assert indices[0] == 0 and indices[-1] == 16 and len(indices) == 17
    image = Image.open(io.BytesIO(media.spritesheet_jpeg(source)))
    assert image.format == "JPEG"
    assert image.size == (columns * 64, rows * 48)
    sheet = np.asarray(image.convert("RGB")).astype(np.int16)
    # Each tile holds its frame.
    for tile, index in enumerate(indices):
        row, column = divmod(tile, columns)
        cell = sheet[row * 48 : (row + 1) * 48, column * 64 : (column + 1) * 64]
        assert np.abs(cell - source[index]).mean() < 8


def test_spritesheet_samples_long_clips_evenly():
    indices, columns, rows = media.spritesheet_layout(65, max_tiles=36)
    assert len(indices) == 36 and indices[0] == 0 and indices[-1] == 64
    assert indices == sorted(set(indices))
    assert columns * rows >= 36


def test_encode_assets_gives_all_three():
    assets = media.encode_assets(moving_square(9, 64, 64))
    assert media.decode_mp4(assets.video).shape == (9, 64, 64, 3)
    assert Image.open(io.BytesIO(assets.thumbnail)).format == "WEBP"
    assert Image.open(io.BytesIO(assets.spritesheet)).format == "JPEG"


@pytest.mark.parametrize(
    "frames,message",
    [
        (np.zeros((4, 64, 64), np.uint8), "shape"),
        (np.zeros((4, 64, 64, 3), np.float32), "uint8"),
        (np.zeros((0, 64, 64, 3), np.uint8), "at least one"),
        (np.zeros((4, 63, 64, 3), np.uint8), "even"),
    ],
)
def test_bad_frames_are_refused_with_a_reason(frames, message):
    with pytest.raises(ValueError, match=message):
        media.encode_mp4(frames)
