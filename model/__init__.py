"""Reel's model library: a causal video autoencoder and a patch Diffusion Transformer.

Plain PyTorch. It never reads the environment or imports the service.
`from model import TextToVideo, VideoSpec` loads torch on first use only, so
`import model.config` stays light.
"""

__all__ = ["TextToVideo", "VideoSpec"]


def __getattr__(name):
    if name in __all__:
        from model import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
