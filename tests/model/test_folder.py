"""VideoFolderDataset on small videos written with PyAV: sizes, lengths, frame rates, errors."""

import json

import av
import numpy as np
import pytest

from model.data import Scene, ShapeObject, render
from model.data.folder import VideoFolderDataset, target_size


def write_video(path, frames, fps=8, codec="libx264"):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def gradient_clip(width, height, count):
    """Frames whose red channel follows x, green follows y, and blue counts frames (to check order)."""
    xs = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    ys = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    frames = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        frames[t, ..., 0], frames[t, ..., 1] = xs, ys
        frames[t, ..., 2] = int(t * 255 / max(count - 1, 1))
    return frames


def write_captions(root, entries):
    (root / "captions.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n")


def test_videos_are_resized_to_multiples_of_16_keeping_aspect_and_trimmed(tmp_path):
    write_video(tmp_path / "wide.mp4", gradient_clip(200, 100, 23))
    write_video(tmp_path / "tall.mp4", gradient_clip(70, 136, 10))
    write_video(tmp_path / "square.mp4", gradient_clip(48, 48, 1))
    write_captions(tmp_path, [
        {"file": "wide.mp4", "caption": "a wide gradient"},
        {"file": "tall.mp4", "caption": "a tall gradient"},
        {"file": "square.mp4", "caption": "one frame"},
    ])
    dataset = VideoFolderDataset(tmp_path)
    assert len(dataset) == 3
    items = list(dataset)
    (wide, wide_text), (tall, tall_text), (square, square_text) = items
    assert wide_text == "a wide gradient" and tall_text == "a tall gradient" and square_text == "one frame"
    assert wide.dtype == np.uint8 and wide.shape == (21, 96, 208, 3)  # 200x100 -> 208x96, 23 -> 21 frames
    assert tall.shape == (9, 144, 64, 3)  # 70x136 -> 64x144 (nearest multiples), 10 -> 9 frames
    assert square.shape == (1, 48, 48, 3)
    # Scaled, not cropped: the gradient still runs from edge to edge in both directions.
    for video in (wide, tall):
        assert video[0, :, :4, 0].mean() < 30 and video[0, :, -4:, 0].mean() > 225
        assert video[0, :4, :, 1].mean() < 30 and video[0, -4:, :, 1].mean() > 225
    # Frames stay in order.
    assert np.all(np.diff(wide[:, 48, 100, 2].astype(int)) >= 0)


def test_shapes_survive_the_trip_through_a_folder(tmp_path):
    scene = Scene("navy", (ShapeObject("yellow", "square", "large", "right"),))
    clip = render(scene, 112, 64, 17)
    write_video(tmp_path / "shape.mp4", clip)
    write_captions(tmp_path, [{"file": "shape.mp4", "caption": "a large yellow square moving right on navy"}])
    video, text = VideoFolderDataset(tmp_path)[0]
    assert video.shape == clip.shape
    assert np.abs(video.astype(int) - clip.astype(int)).mean() < 4


def test_resampling_to_eight_fps_and_limits(tmp_path):
    # 2 s at 24 fps; frame t is a flat gray of level 5 t, so a decoded level names its source frame.
    levels = np.arange(48) * 5
    write_video(tmp_path / "fast.mp4", np.broadcast_to(levels[:, None, None, None], (48, 64, 64, 3)).astype(np.uint8), fps=24)
    write_captions(tmp_path, [{"file": "fast.mp4", "caption": "fast"}])
    assert VideoFolderDataset(tmp_path)[0][0].shape[0] == 45
    resampled = VideoFolderDataset(tmp_path, fps=8)[0][0]
    assert resampled.shape[0] == 13  # frames at 0, 1/8, ..., 15/8 s: 16 -> 13
    sources = np.round(resampled[:, 32, 32].astype(float).mean(-1) / 5)
    assert np.array_equal(sources, np.arange(13) * 3)  # every third source frame
    assert VideoFolderDataset(tmp_path, max_frames=20)[0][0].shape[0] == 17
    small = VideoFolderDataset(tmp_path, max_side=32)[0][0]
    assert small.shape[1:3] == (32, 32)
    # With both limits decoding stops early, and keeps the frames the whole decode would.
    for max_frames in (1, 5, 9):
        limited = VideoFolderDataset(tmp_path, fps=8, max_frames=max_frames)[0][0]
        assert np.array_equal(limited, resampled[:max_frames])
        assert np.array_equal(VideoFolderDataset(tmp_path, max_frames=max_frames)[0][0],
                              VideoFolderDataset(tmp_path)[0][0][:max_frames])


def test_target_size():
    assert target_size(1920, 1080) == (1920, 1088)
    assert target_size(1920, 1080, max_side=128) == (128, 80)
    assert target_size(5, 5) == (16, 16)
    assert target_size(100, 30) == (96, 32)


def test_missing_captions_file_is_named(tmp_path):
    write_video(tmp_path / "a.mp4", gradient_clip(32, 32, 5))
    with pytest.raises(FileNotFoundError, match="captions.jsonl"):
        VideoFolderDataset(tmp_path)


def test_video_without_caption_is_named(tmp_path):
    write_video(tmp_path / "a.mp4", gradient_clip(32, 32, 5))
    write_video(tmp_path / "b.mp4", gradient_clip(32, 32, 5))
    write_captions(tmp_path, [{"file": "a.mp4", "caption": "a"}])
    with pytest.raises(ValueError, match="b.mp4"):
        VideoFolderDataset(tmp_path)
    write_captions(tmp_path, [{"file": "a.mp4", "caption": "a"}, {"file": "b.mp4", "caption": "  "}])
    with pytest.raises(ValueError, match="line 2.*b.mp4 has no caption"):
        VideoFolderDataset(tmp_path)


def test_bad_lines_and_missing_files_are_named(tmp_path):
    write_video(tmp_path / "a.mp4", gradient_clip(32, 32, 5))
    (tmp_path / "captions.jsonl").write_text('{"file": "a.mp4", "caption": "a"}\n{not json\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        VideoFolderDataset(tmp_path)
    write_captions(tmp_path, [{"file": "a.mp4", "caption": "a"}, {"file": "gone.mp4", "caption": "b"}])
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        VideoFolderDataset(tmp_path)
    write_captions(tmp_path, [{"caption": "no file"}])
    with pytest.raises(ValueError, match='"file"'):
        VideoFolderDataset(tmp_path)


def test_unreadable_video_is_named(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video at all" * 10)
    write_captions(tmp_path, [{"file": "broken.mp4", "caption": "broken"}])
    dataset = VideoFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="broken.mp4"):
        dataset[0]
