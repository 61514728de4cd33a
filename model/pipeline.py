"""TextToVideo: prompts in, uint8 videos out.

The latent video of every request is sampled by the DiT in one packed forward
pass per step (whatever their sizes and durations), with the conditional and
unconditional rows of classifier-free guidance in that same pass, and is then
decoded by the causal VAE.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from model.config import ModelConfig, preset, PRESETS
from model.dit import DiT
from model.flow import classifier_free_guidance, make_noise, sample, timestep_shift, to_velocity
from model.text import TextEncoder
from model.vae import CausalVAE

# Named checkpoints shipped with the repository live here (e.g. weights/reel-shapes-v1).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0


@dataclass(frozen=True)
class VideoSpec:
    prompt: str  # what the video shows
    negative_prompt: str = ""  # what it should not show; replaces "" as the unconditional text
    width: int = 64  # pixels, a multiple of 16
    height: int = 64  # pixels, a multiple of 16
    frames: int = 17  # 1 + 4k; 1 is a still image
    seed: int = 0  # the noise depends on this seed and the shape only
    steps: int | None = None  # sampler steps (None: the model's default)
    guidance: float | None = None  # classifier-free guidance scale (None: the model's default)


# One frozen text encoder per device, shared by every pipeline of the process
# (it takes seconds to load and holds no per-model state).
_text_encoders: dict[tuple, TextEncoder] = {}
_text_encoders_lock = threading.Lock()


def shared_text_encoder(config, device) -> TextEncoder:
    key = (config, str(torch.device(device)))
    with _text_encoders_lock:
        if key not in _text_encoders:
            _text_encoders[key] = TextEncoder(config, device)
        return _text_encoders[key]


def checkpoint_dir(name_or_path) -> Path | None:
    """The directory of a checkpoint given by its path or by its name under weights/; None otherwise."""
    name = str(name_or_path)
    if Path(name).is_dir():
        return Path(name)
    bundled = WEIGHTS_DIR / name
    return bundled if "/" not in name and bundled.is_dir() else None


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    # video: (3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8
    pixels = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).cpu().numpy()


def check_device(device) -> torch.device:
    """The torch device asked for, or a clear error when it names a GPU this machine does not have."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but torch sees no CUDA GPU here (use 'cpu')")
    return device


class TextToVideo:
    def __init__(self, config: ModelConfig, vae: CausalVAE, dit: DiT, text: TextEncoder, device="cpu"):
        if config.dit.latent_channels != config.vae.latent_channels:
            raise ValueError(
                f"dit.latent_channels ({config.dit.latent_channels}) must equal "
                f"vae.latent_channels ({config.vae.latent_channels})"
            )
        self.config = config
        self.device = check_device(device)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.dit = dit.to(self.device).eval().requires_grad_(False)
        self.text = text

    # ----- construction -------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, seed: int = 0, device="cpu") -> "TextToVideo":
        """Random weights of a preset (for tests and trying the plumbing), seeded."""
        check_device(device)
        config = preset(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae, dit = CausalVAE(config.vae), DiT(config.dit)
        return cls(config, vae, dit, shared_text_encoder(config.text, device), device)

    @classmethod
    def from_pretrained(cls, path, device="cpu") -> "TextToVideo":
        """A checkpoint directory: config.json, vae.safetensors, dit.safetensors."""
        from safetensors.torch import load_file

        check_device(device)
        path = Path(path)
        missing = [f for f in ("config.json", "vae.safetensors", "dit.safetensors") if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} is not a model checkpoint: missing {', '.join(missing)}")
        try:
            config = ModelConfig.from_json((path / "config.json").read_text())
        except (ValueError, TypeError) as error:  # TypeError: a field this version does not know
            raise ValueError(f"{path / 'config.json'}: {error}") from error
        vae, dit = CausalVAE(config.vae), DiT(config.dit)
        vae.load_state_dict(load_file(path / "vae.safetensors"))
        dit.load_state_dict(load_file(path / "dit.safetensors"))
        return cls(config, vae, dit, shared_text_encoder(config.text, device), device)

    @classmethod
    def load(cls, name_or_path, device="cpu") -> "TextToVideo":
        """A checkpoint directory, a named checkpoint under weights/ (reel-shapes-v1), or a preset."""
        name = str(name_or_path)
        path = checkpoint_dir(name)
        if path is not None:
            return cls.from_pretrained(path, device)
        if name in PRESETS:
            return cls.from_preset(name, device=device)
        raise FileNotFoundError(
            f"no model {name!r}: not a checkpoint directory, not a named checkpoint in {WEIGHTS_DIR} "
            f"(expected {WEIGHTS_DIR / name} with config.json, vae.safetensors, dit.safetensors; `reel train` makes one), "
            f"and not a preset ({', '.join(PRESETS)})"
        )

    def save_pretrained(self, path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(self.config.to_json())
        for name, module in (("vae", self.vae), ("dit", self.dit)):
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, path / f"{name}.safetensors")

    # ----- requests -----------------------------------------------------------

    @property
    def max_frames(self) -> int:
        return 1 + self.config.fps * max(self.config.seconds)

    def validate(self, spec: VideoSpec) -> None:
        """Raises ValueError naming the field that is out of range."""
        max_side = self.config.max_side
        if not isinstance(spec.prompt, str):
            raise ValueError(f"prompt must be a string, got {type(spec.prompt).__name__}")
        if not isinstance(spec.negative_prompt, str):
            raise ValueError(f"negative_prompt must be a string, got {type(spec.negative_prompt).__name__}")
        for field in ("width", "height"):
            value = getattr(spec, field)
            if not _is_int(value) or value % 16 or not 16 <= value <= max_side:
                raise ValueError(f"{field} must be a multiple of 16 from 16 to {max_side}, got {value!r}")
        tf = self.config.vae.temporal_factor
        frames = spec.frames
        if not _is_int(frames) or frames < 1 or (frames - 1) % tf or frames > self.max_frames:
            raise ValueError(f"frames must be 1 + {tf}k (1, {1 + tf}, {1 + 2 * tf}, ...) up to {self.max_frames}, got {frames!r}")
        if not _is_int(spec.seed) or not 0 <= spec.seed < 2**63:
            raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {spec.seed!r}")
        if spec.steps is not None and (not _is_int(spec.steps) or not 1 <= spec.steps <= MAX_STEPS):
            raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {spec.steps!r}")
        guidance = spec.guidance
        if guidance is not None and not (
            isinstance(guidance, numbers.Real) and not isinstance(guidance, bool) and 0 <= guidance <= MAX_GUIDANCE
        ):
            raise ValueError(f"guidance must be a number from 0 to {MAX_GUIDANCE:g}, got {guidance!r}")

    def latent_shape(self, spec: VideoSpec) -> tuple[int, int, int, int]:
        return self.config.vae.latent_shape(spec.width, spec.height, spec.frames)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def sample_latents(
        self, specs: list[VideoSpec], on_step: Callable[[int, int], None] | None = None, sampler: str | None = None
    ) -> list[torch.Tensor]:
        """The denoised latent (C, t, h, w) of every spec, in order.

        Specs are grouped by step count (the usual case, everyone on the
        defaults, is one group): each group is sampled with one packed forward
        pass per step for all its specs and guidance rows. A spec's schedule,
        noise and text never depend on the other specs, so it comes out the
        same alone or in any batch. on_step(i, n) counts steps over all groups.
        """
        for spec in specs:
            self.validate(spec)
        flow = self.config.flow
        sampler = sampler or flow.sampler
        steps = [spec.steps or flow.steps for spec in specs]
        total = sum(dict.fromkeys(steps))  # each distinct step count once
        done = 0
        latents: list[torch.Tensor | None] = [None] * len(specs)
        for group_steps in dict.fromkeys(steps):
            members = [i for i, s in enumerate(steps) if s == group_steps]
            offset = done

            def report(i, n, offset=offset):
                if on_step is not None:
                    on_step(offset + i, total)

            group = self._sample_group([specs[i] for i in members], group_steps, sampler, report)
            for i, z in zip(members, group):
                latents[i] = z
            done += group_steps
        return latents

    def _sample_group(self, specs, steps, sampler, on_step) -> list[torch.Tensor]:
        flow = self.config.flow
        guidance = [flow.guidance if spec.guidance is None else float(spec.guidance) for spec in specs]
        shapes = [self.latent_shape(spec) for spec in specs]
        noise = [make_noise(shape, spec.seed, self.device) for shape, spec in zip(shapes, specs)]
        shifts = [timestep_shift(math.prod(self.dit.grid(shape)), flow) for shape in shapes]
        guided = any(g != 1.0 for g in guidance)
        # Rows: the S conditional ones, then (with guidance) the S unconditional ones,
        # whose text is the negative prompt ("" unless given).
        prompts = [spec.prompt for spec in specs]
        if guided:
            prompts += [spec.negative_prompt for spec in specs]
        text_states, text_mask = self.text.encode(prompts)
        row_shapes = shapes * 2 if guided else shapes
        packing = self.dit.prepare(row_shapes, text_mask)  # masks and rotary tables, once for all steps

        def velocity_rows(x_rows, t_rows):
            with self._autocast():
                v = self.dit(x_rows, t_rows, text_states, text_mask, packing=packing)
            return to_velocity([vi.float() for vi in v], x_rows, t_rows, flow)

        velocity_fn = classifier_free_guidance(velocity_rows, guidance) if guided else velocity_rows
        return sample(velocity_fn, noise, steps, sampler=sampler, shifts=shifts, on_step=on_step)

    @torch.inference_mode()
    def decode(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        # latents: list of (C, t, h, w) -> list of (3, T, H, W) in [-1, 1], one VAE pass each
        with self._autocast():
            return [self.vae.decode(z[None])[0].float() for z in latents]

    def generate(
        self, specs: list[VideoSpec], on_step: Callable[[int, int], None] | None = None, sampler: str | None = None
    ) -> list[np.ndarray]:
        """One uint8 video (T, H, W, 3) per spec. on_step(i, n) after every step; it may raise to cancel."""
        if isinstance(specs, VideoSpec):
            specs = [specs]
        if not specs:
            return []
        return [to_uint8(video) for video in self.decode(self.sample_latents(specs, on_step, sampler))]
