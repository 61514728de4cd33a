"""Training data: the Shapes world (renderer, scenes, captions) and a folder of captioned videos."""

from model.data.shapes import (
    BACKGROUNDS,
    COLORS,
    FPS,
    HELDOUT_COMBOS,
    MOTIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    ShapesClips,
    caption,
    parse_prompt,
    render,
    sample_scene,
)
from model.data.folder import VideoFolderDataset

__all__ = [
    "BACKGROUNDS", "COLORS", "FPS", "HELDOUT_COMBOS", "MOTIONS", "SHAPES", "SIZES", "Scene", "ShapeObject",
    "ShapesClips", "VideoFolderDataset", "caption", "parse_prompt", "render", "sample_scene",
]
