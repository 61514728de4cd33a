"""Reel's model library: a causal video autoencoder and a patch Diffusion Transformer.

Plain PyTorch. It never reads the environment or imports the service.
"""
