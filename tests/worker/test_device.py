"""Which device a worker runs the model on (REEL_DEVICE)."""

import torch

from worker.celery_app import resolve_device


def test_auto_is_the_gpu_when_one_is_visible_else_the_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"  # taken as given; the pipeline says if it is missing
