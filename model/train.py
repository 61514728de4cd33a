"""Training: the autoencoder stage, the transformer stage and a decoder stage, resumable.

    reel train vae --preset shapes-s10 --out runs/vae --steps 2400
    reel train dit --preset shapes-s10 --vae runs/vae --out runs/dit --steps 9000
    reel train decoder --preset shapes-s10 --vae runs/vae --out runs/decoder --steps 3000

The decoder stage fine-tunes the autoencoder's decoder with its encoder frozen
(as Stable Diffusion's improved VAE decoders were made): the latent space stays
bit for bit the one the transformer learns, so the decoder can keep improving
while the transformer trains, on another core.

A run lives in one directory and may span several processes: every
`--checkpoint-every` steps (and at the end) the weights, optimiser state and a
small state JSON are written atomically, and the next call with the same `--out`
continues from there. The data a step sees is a function of (seed, step) alone
(or of the seed and a saved stream position), so a resumed run ends at the same
weights as an uninterrupted one.

Run directory layout:
    config.json              the whole ModelConfig
    log.jsonl                one line per step: step, loss, lr, seconds
    latest                   name of the newest complete checkpoint directory
    ckpt-0000200/            model.safetensors, [ema.safetensors], optimizer.pt, state.json
    vae.safetensors          vae/decoder stage: final weights with measured latent statistics
    eval.json                vae/decoder stage: held-out PSNR
    export/                  dit stage: config.json, vae.safetensors, dit.safetensors (EMA)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from model.config import ModelConfig, preset
from model.discriminator import (
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from model.evaluate import FAR_FROM_BACKGROUND
from model.pipeline import checkpoint_dir
from model.vae import CausalVAE

FPS = 8  # the frame rate of the Shapes world and of every video Reel makes
FRAME_COUNTS = (1, 9, 17, 33)  # still image, 1 s, 2 s, 4 s at 8 fps
# The autoencoder's steps favour stills and short clips. Its convolutions see a few frames at a time,
# so 33 frames teach it nothing that 17 do not, while more distinct scenes per step make it learn
# several times faster per second (one clip of 112x64x33 costs as much as 36 stills of 64x64).
VAE_FRAME_COUNTS = (1, 9, 17)
VAE_FRAME_WEIGHTS = (0.5, 0.3, 0.2)
EVAL_SALT = 7_919  # separates held-out clips' random streams from training's


# -----------------------------------------------------------------------------
# data: every draw is a function of a tuple of integers (seed, step, ...)


def rng_for(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def torch_generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng_for(*key).integers(0, 2**62)))


def video_to_tensor(video: np.ndarray) -> torch.Tensor:
    # (T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]
    return torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def shapes_clip(rng: np.random.Generator, width: int, height: int, frames: int) -> tuple[np.ndarray, str]:
    from model.data.shapes import caption, render, sample_scene

    scene = sample_scene(rng)
    return render(scene, width, height, frames), caption(scene, rng)


class FolderClips:
    """A folder of videos with captions.jsonl, read in a seeded order (one permutation per epoch).

    Videos are taken at the 8 fps Reel generates, at most as long as the longest clip
    the model makes and at most as large as its largest canvas (scaled down, aspect kept):
    a phone's 1080p minute would otherwise be encoded whole at every step.
    """

    def __init__(self, root: str, seed: int, config: ModelConfig):
        from model.data.folder import VideoFolderDataset

        max_side = max(max(size) for size in config.sizes)
        self.dataset = VideoFolderDataset(root, fps=FPS, max_frames=max(FRAME_COUNTS), max_side=max_side)
        self.seed = seed

    def item(self, position: int) -> tuple[np.ndarray, str]:
        n = len(self.dataset)
        epoch, offset = divmod(position, n)
        order = rng_for(self.seed, epoch).permutation(n)
        video, text = self.dataset[int(order[offset])][:2]
        return video, text


def crop_to_budget(video: np.ndarray, budget: int, rng: np.random.Generator, multiple: int = 16) -> np.ndarray:
    # Folder videos come in any size; keep T = 1 + 4k and sides multiple of 16 while fitting the budget.
    T, H, W, _ = video.shape
    while T * H * W > budget and T > 1:
        T = 1 + 4 * ((T - 1) // 8)
    while T * H * W > budget and max(H, W) > multiple:
        if H >= W:
            H = max(multiple, (H // 2) // multiple * multiple)
        else:
            W = max(multiple, (W // 2) // multiple * multiple)
    t0 = int(rng.integers(0, video.shape[0] - T + 1))
    y0 = int(rng.integers(0, video.shape[1] - H + 1))
    x0 = int(rng.integers(0, video.shape[2] - W + 1))
    return video[t0 : t0 + T, y0 : y0 + H, x0 : x0 + W]


def vae_batch(step: int, seed: int, config: ModelConfig, pixel_budget: int, folder: FolderClips | None,
              stills_until: int = 0, frame_weights: tuple[float, ...] = VAE_FRAME_WEIGHTS, with_captions: bool = False):
    """The clips of one autoencoder step: one shape per step, as many clips as fit the pixel budget.

    Steps before `stills_until` are still images only: the spatial compression is learnt several
    times faster without clips in between (measured on the Shapes world), and clips then add the
    temporal part to it. After that a step's frame count is drawn from VAE_FRAME_COUNTS with
    `frame_weights`. With `with_captions`, returns (clips, their captions).
    """
    rng = rng_for(seed, step)
    if folder is not None:
        video, text = folder.item(step)
        x = video_to_tensor(crop_to_budget(video, pixel_budget, rng))[None]
        return (x, [text]) if with_captions else x
    width, height = config.sizes[int(rng.integers(len(config.sizes)))]
    frames = int(rng.choice(VAE_FRAME_COUNTS, p=frame_weights))
    if step < stills_until:
        frames = 1
    count = max(1, pixel_budget // (frames * width * height))
    clips = [shapes_clip(rng, width, height, frames) for _ in range(count)]
    x = torch.stack([video_to_tensor(video) for video, _ in clips])
    return (x, [text for _, text in clips]) if with_captions else x


# -----------------------------------------------------------------------------
# run directory: checkpoints written atomically, the loss log, resuming


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    # Linear warmup, then cosine decay to a tenth of the peak.
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def save_checkpoint(out: Path, step: int, tensors: dict[str, dict], optimizer, state: dict,
                    other_optimizers: dict | None = None) -> None:
    name = f"ckpt-{step:07d}"
    tmp = out / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file_name, state_dict in tensors.items():
        save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(tmp / file_name))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    for file_name, other in (other_optimizers or {}).items():
        torch.save(other.state_dict(), tmp / file_name)
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    shutil.rmtree(out / name, ignore_errors=True)
    os.replace(tmp, out / name)
    (out / "latest.tmp").write_text(name)
    os.replace(out / "latest.tmp", out / "latest")
    for old in out.glob("ckpt-*"):  # keep only the newest checkpoint
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "latest"
    if pointer.exists():
        path = out / pointer.read_text().strip()
        if (path / "state.json").exists():
            return path
    complete = sorted(p for p in out.glob("ckpt-*") if not p.name.endswith(".tmp") and (p / "state.json").exists())
    return complete[-1] if complete else None


def refuse_other_settings(out: Path, state: dict, settings: dict) -> None:
    """A run resumes only with the data settings it started with: the data stream depends on them too."""
    for name, value in settings.items():
        if state.get(name, value) != value:
            raise ValueError(f"{out} was started with {name}={state[name]}; resume it with the same value (got {value})")


def display_path(path: str | Path) -> str:
    # A run's state may be committed: a path under the working directory is recorded relative to it.
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def append_log(out: Path, record: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(out: Path, step: int) -> None:
    # Lines written after the checkpoint we resume from would be repeated: drop them.
    path = out / "log.jsonl"
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < step]
    path.write_text("".join(line + "\n" for line in lines))


def prepare_run(out: Path, config: ModelConfig, stage: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        if saved.get("stage") != stage or ModelConfig.from_dict(saved["model"]) != config:
            raise ValueError(f"{out} holds a different run ({config_path}); choose another --out")
    else:
        write_json_atomic(config_path, {"stage": stage, "model": json.loads(config.to_json())})


# -----------------------------------------------------------------------------
# the autoencoder stage


def foreground_mask(x: torch.Tensor) -> torch.Tensor:
    """1 on pixels farther than 60 RGB levels (the analyzer's "not background") from their frame's border
    colour, and on their neighbours."""
    # x: (B, 3, T, H, W) in [-1, 1] -> (B, 1, T, H, W)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)  # (B, 3, T, 2W + 2H)
    background = border.median(dim=-1).values[..., None, None]
    far = ((x - background).norm(dim=1, keepdim=True) > FAR_FROM_BACKGROUND / 127.5).float()
    return F.max_pool3d(far, (1, 3, 3), stride=1, padding=(0, 1, 1))


def vae_loss(vae: CausalVAE, x: torch.Tensor, denoise=None) -> tuple[torch.Tensor, dict, torch.Tensor]:
    # denoise: None, or a function from raw latents to what the decoder is to draw instead of them
    if denoise is None:
        recon, latent = vae(x)
    else:
        latent = vae.encode_raw(x)
        recon = vae.decoder(denoise(latent))
    # On plain backgrounds the objects are a few percent of the pixels, yet their edges and corners
    # are what tells a square from a circle: weighting them keeps shapes from melting into blobs.
    weight = 1.0
    if vae.config.foreground_weight:
        weight = 1.0 + vae.config.foreground_weight * foreground_mask(x)
    l1 = ((recon - x).abs() * weight).mean()
    mse = ((recon - x).pow(2) * weight).mean()
    penalty = latent.pow(2).mean()
    loss = l1 + mse + vae.config.latent_penalty * penalty
    return loss, {"l1": l1.item(), "mse": mse.item()}, recon


# A decoder stage may learn to draw what a finished model's transformer hands it. A sampler's last
# step (from t = 0.23 with 10 Euler steps at 64x64x17) gives the decoder the transformer's estimate of
# the clean latent, which is smoother than an encoder's latent: squares come back with rounded corners.
# Shown such estimates of true clips' latents, with the true clips as targets, the decoder learns to
# draw them as the clips they came from. LTX-Video (HaCohen et al., 2024) goes further: its decoder takes
# the last denoising step itself.
DENOISE_MAX_T = 0.35  # estimates from t ~ U(0, this): past the last step of the shipped sampling at every size


@torch.no_grad()
def denoised_latents(pipeline, z: torch.Tensor, captions: list[str], generator: torch.Generator) -> torch.Tensor:
    """The transformer's one-step estimate of normalised latents z (B, C, t, h, w) from noise level
    t ~ U(0, DENOISE_MAX_T) per clip, guided as its sampler guides: x_t - t v(x_t, t), same shape."""
    from model.flow import classifier_free_guidance, to_velocity

    flow = pipeline.config.flow
    t = torch.rand(len(z), generator=generator) * DENOISE_MAX_T
    noisy = list((1 - t.view(-1, 1, 1, 1, 1)) * z + t.view(-1, 1, 1, 1, 1) * torch.randn(z.shape, generator=generator))
    text_states, text_mask = pipeline.text.encode(list(captions) + [""] * len(captions))

    def velocity_rows(xs, ts):
        return to_velocity(pipeline.dit(xs, ts, text_states, text_mask), xs, ts, flow)

    velocity = classifier_free_guidance(velocity_rows, [flow.guidance] * len(captions))(noisy, t)
    return torch.stack([x - ti * v for x, ti, v in zip(noisy, t, velocity)])


@torch.no_grad()
def measure_latent_stats(vae: CausalVAE, seed: int, config: ModelConfig, count: int = 48) -> None:
    """Sets latent_mean/latent_std to the per-channel statistics of raw latents of fresh Shapes clips."""
    vae.eval()
    latents = []
    for i in range(count):
        rng = rng_for(seed, EVAL_SALT, 1, i)
        width, height = config.sizes[i % len(config.sizes)]
        frames = FRAME_COUNTS[(i // len(config.sizes)) % len(FRAME_COUNTS)]
        video = shapes_clip(rng, width, height, frames)[0]
        z = vae.encode_raw(video_to_tensor(video)[None])
        latents.append(z.transpose(0, 1).reshape(z.shape[1], -1))
    flat = torch.cat(latents, dim=1)
    vae.latent_mean.copy_(flat.mean(dim=1).view_as(vae.latent_mean))
    vae.latent_std.copy_(flat.std(dim=1).clamp_min(1e-4).view_as(vae.latent_std))


@torch.no_grad()
def evaluate_vae_psnr(
    vae: CausalVAE,
    seed: int = 0,
    count: int = 32,
    sizes=((64, 64), (112, 64), (64, 112), (96, 96)),
    frame_counts=FRAME_COUNTS,
) -> float:
    """Mean PSNR (dB, on uint8 frames) of encode -> decode over Shapes clips no training step draws."""
    vae.eval()
    scores = []
    for i in range(count):
        rng = rng_for(seed, EVAL_SALT, 2, i)
        width, height = sizes[i % len(sizes)]
        frames = frame_counts[(i // len(sizes)) % len(frame_counts)]
        video = shapes_clip(rng, width, height, frames)[0]
        decoded = vae.decode(vae.encode(video_to_tensor(video)[None]))[0]
        pixels = ((decoded + 1) * 127.5).round().clamp(0, 255).permute(1, 2, 3, 0)
        mse = (pixels - torch.from_numpy(video).float()).pow(2).mean().item()
        scores.append(10 * math.log10(255**2 / max(mse, 1e-10)))
    return float(np.mean(scores))


def train_vae(
    config: ModelConfig,
    out: str | Path,
    steps: int,
    seed: int = 0,
    lr: float | None = None,
    pixel_budget: int | None = None,
    checkpoint_every: int = 200,
    data: str = "shapes",
    device: str = "cpu",
    stop_after: int | None = None,
    eval_clips: int = 32,
    frozen_encoder_from: str | Path | None = None,
    stills_share: float = 0.0,
    frame_weights: tuple[float, ...] = VAE_FRAME_WEIGHTS,
    denoised_by: str | Path | None = None,
    log=print,
) -> CausalVAE:
    """Trains (or continues training) the autoencoder; `stop_after` ends this process early, as an interruption would.

    With `frozen_encoder_from` (a finished vae run) this is the decoder stage: the
    weights and latent statistics start from that run and only the decoder learns.
    The first `stills_share` of a vae run's steps show still images only; `frame_weights` are
    the chances of a still, a 9- and a 17-frame clip in the others (see vae_batch).
    With `denoised_by` (a model whose encoder is the frozen one) the decoder stage learns to draw that
    model's transformer's estimates of the latents (denoised_latents) as the clips they came from.
    """
    out = Path(out)
    stage = "vae" if frozen_encoder_from is None else "decoder"
    if not 0 <= stills_share <= 1:
        raise ValueError(f"stills_share must be between 0 and 1, got {stills_share}")
    if (len(frame_weights) != len(VAE_FRAME_COUNTS) or not all(math.isfinite(w) and w >= 0 for w in frame_weights)
            or abs(sum(frame_weights) - 1) > 1e-6):
        raise ValueError(f"frame_weights must be {len(VAE_FRAME_COUNTS)} chances (a still, 9 and 17 frames) "
                         f"that add up to 1, got {list(frame_weights)}")
    prepare_run(out, config, stage)
    lr = lr or (1e-3 if stage == "vae" else 5e-4)
    pixel_budget = pixel_budget or 18 * 64 * 64  # 18 stills of 64x64, 2 clips of 64x64x9, or one longer clip
    folder = None if data == "shapes" else FolderClips(data, seed, config)

    torch.manual_seed(seed)
    vae = CausalVAE(config.vae).to(device)
    if frozen_encoder_from is not None:
        trained, trained_config = load_trained_vae(frozen_encoder_from, device)
        if trained_config.vae.network() != config.vae.network():
            raise ValueError(f"the autoencoder in {frozen_encoder_from} has another VAEConfig than preset {config.name!r}")
        vae.load_state_dict(trained.state_dict())
        vae.encoder.requires_grad_(False)
    pipeline = None
    if denoised_by is not None:
        from model.pipeline import TextToVideo

        if stage != "decoder":
            raise ValueError("denoised_by is for the decoder stage (its encoder frozen)")
        pipeline = TextToVideo.from_pretrained(denoised_by, device=device)
        if encoder_fingerprint(pipeline.vae) != encoder_fingerprint(vae):
            raise ValueError(f"{denoised_by} has another encoder than {frozen_encoder_from}: its transformer "
                             "learned other latents")
    trainable = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    discriminator = discriminator_optimizer = None
    if config.vae.adversarial_weight:
        if stage != "decoder":
            raise ValueError("adversarial_weight is for the decoder stage (a frozen encoder's latents to draw sharply)")
        discriminator = PatchDiscriminator(config.vae.in_channels).to(device)
        discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)
    stills_until = int(steps * stills_share) if stage == "vae" else 0
    # Recorded as given, so that a resume compares the numbers it was started with; drawn from normalised.
    data_settings = {"pixel_budget": pixel_budget, "stills_until": stills_until, "frame_weights": list(frame_weights),
                     "denoised_by": None if denoised_by is None else display_path(denoised_by)}
    frame_weights = tuple(w / sum(frame_weights) for w in frame_weights)
    start = 0
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None:
        state = json.loads((checkpoint / "state.json").read_text())
        # Checkpoints written before frame_weights was recorded drew frames with the default.
        refuse_other_settings(out, {"frame_weights": list(VAE_FRAME_WEIGHTS), "denoised_by": None, **state}, data_settings)
        vae.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        if discriminator is not None:
            discriminator.load_state_dict(load_file(str(checkpoint / "discriminator.safetensors")))
            discriminator_optimizer.load_state_dict(torch.load(checkpoint / "discriminator_optimizer.pt", weights_only=True))
        start = state["step"]
        log(f"resuming from {checkpoint} at step {start}")
    truncate_log(out, start)

    def checkpoint_now(step):
        state = {"step": step, "seed": seed, "stage": stage, **data_settings}
        tensors, others = {"model.safetensors": vae.state_dict()}, {}
        if discriminator is not None:
            tensors["discriminator.safetensors"] = discriminator.state_dict()
            others["discriminator_optimizer.pt"] = discriminator_optimizer
        save_checkpoint(out, step, tensors, optimizer, state, others)

    def estimate_raw(captions, generator, raw):
        # raw latents -> the transformer's estimates of them, raw again (the decoder reads raw latents)
        z = denoised_latents(pipeline, (raw - vae.latent_mean) / vae.latent_std, captions, generator)
        return z * vae.latent_std + vae.latent_mean

    vae.train()
    last_step = steps if stop_after is None else min(steps, start + stop_after)
    for step in range(start, last_step):
        began = time.time()
        x, captions = vae_batch(step, seed, config, pixel_budget, folder, stills_until, frame_weights, with_captions=True)
        x = x.to(device)
        denoise = None
        if pipeline is not None:
            denoise = functools.partial(estimate_raw, captions, torch_generator(seed, 11, step))
        step_lr = learning_rate(step, steps, lr, warmup=min(200, steps // 10 + 1))
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        loss, parts, recon = vae_loss(vae, x, denoise)
        if discriminator is not None:
            discriminator.requires_grad_(False)
            adversarial = generator_loss(discriminator(recon))
            weight = adaptive_weight(loss, adversarial, vae.decoder.conv_out.conv.weight)
            loss = loss + config.vae.adversarial_weight * weight * adversarial
            parts.update(adversarial=adversarial.item(), adversarial_scale=weight.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        if discriminator is not None:
            # The discriminator's turn, on the same clips and the decoder's drawing of them before this step.
            discriminator.requires_grad_(True)
            for group in discriminator_optimizer.param_groups:
                group["lr"] = step_lr
            d_loss = discriminator_loss(discriminator(x), discriminator(recon.detach()))
            discriminator_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            discriminator_optimizer.step()
            parts["discriminator"] = d_loss.item()
        record = {"step": step, "loss": loss.item(), **parts, "lr": step_lr, "seconds": time.time() - began, "shape": list(x.shape)}
        append_log(out, record)
        if step % 50 == 0:
            log(json.dumps(record))
        if (step + 1) % checkpoint_every == 0 and step + 1 < last_step:
            checkpoint_now(step + 1)
    if last_step > start or checkpoint is None:
        checkpoint_now(last_step)
    if last_step < steps:
        return vae

    # The run is complete: measure the latent statistics (a frozen encoder keeps its own), store the
    # final weights, score held-out clips.
    if stage == "vae":
        measure_latent_stats(vae, seed, config, count=max(4, eval_clips))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(out / "vae.safetensors.tmp"))
    os.replace(out / "vae.safetensors.tmp", out / "vae.safetensors")
    psnr = evaluate_vae_psnr(vae, seed=seed, count=eval_clips, sizes=config.sizes)
    write_json_atomic(out / "eval.json", {"step": steps, "heldout_psnr_db": psnr})
    log(f"held-out PSNR {psnr:.2f} dB")
    return vae


def load_trained_vae(run: str | Path, device: str = "cpu") -> tuple[CausalVAE, ModelConfig]:
    """The final autoencoder of a finished vae run (or of an exported model directory)."""
    run = Path(run)
    weights = run / "vae.safetensors"
    if not weights.exists():
        raise ValueError(f"{run}: no vae.safetensors (has the vae run finished?)")
    saved = json.loads((run / "config.json").read_text())
    config = ModelConfig.from_dict(saved.get("model", saved))
    vae = CausalVAE(config.vae)
    vae.load_state_dict(load_file(str(weights)))
    return vae.to(device).eval().requires_grad_(False), config


def encoder_fingerprint(vae: CausalVAE) -> str:
    """A digest of everything that makes a latent (encoder weights, latent statistics), not of the decoder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        if not name.startswith("decoder."):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# -----------------------------------------------------------------------------
# the transformer stage


def latent_foreground(x: torch.Tensor, vae_config) -> torch.Tensor:
    """foreground_mask on the latent grid: 1 on latent cells whose pixels include any of it."""
    # x: (1, 3, T, H, W) in [-1, 1] -> (1, t, h, w)
    mask = foreground_mask(x)  # (1, 1, T, H, W)
    # The causal autoencoder gives the first frame a latent frame of its own, then one per temporal_factor frames.
    first, rest = mask[:, :, :1], mask[:, :, 1:]
    if rest.shape[2]:
        rest = F.max_pool3d(rest, (vae_config.temporal_factor, 1, 1))
    mask = torch.cat([first, rest], dim=2)
    return F.max_pool3d(mask, (1, vae_config.spatial_factor, vae_config.spatial_factor))[0]


def latent_tokens_of(config: ModelConfig, latent: torch.Tensor) -> int:
    # latent: (C, t, h, w) -> the number of transformer tokens it becomes
    pt, ph, pw = config.dit.patch_size
    return (latent.shape[1] // pt) * (latent.shape[2] // ph) * (latent.shape[3] // pw)


def pool_clip(config: ModelConfig, seed: int, index: int, shape_shares: tuple[float, ...] | None = None) -> tuple:
    """(scene, (width, height, frames)) of the Shapes clip a transformer run with `seed` trains on at `index`."""
    from model.data.shapes import sample_scene

    rng = rng_for(seed, 3, index)
    width, height = config.sizes[int(rng.integers(len(config.sizes)))]
    scene = sample_scene(rng_for(seed, 4, index), shape_shares=shape_shares)
    return scene, (width, height, FRAME_COUNTS[int(rng.integers(len(FRAME_COUNTS)))])


def pool_caption(scene, seed: int, index: int, epoch: int) -> str:
    """The wording of clip `index` in `epoch`: drawn afresh each epoch."""
    from model.data.captions import caption

    return caption(scene, rng_for(seed, 5, index, epoch))


class LatentPool:
    """Latents of clips addressed by (seed, index), encoded once by the frozen autoencoder and kept.

    Encoding is deterministic and per clip, so a cached latent equals a recomputed
    one and caching never changes what a run learns. Captions are drawn afresh
    per epoch, so the same clip is seen with different wordings.
    """

    def __init__(self, vae: CausalVAE, config: ModelConfig, seed: int, size: int, folder: FolderClips | None, device: str,
                 shape_shares: tuple[float, ...] | None = None):
        self.vae, self.config, self.seed, self.size, self.folder, self.device = vae, config, seed, size, folder, device
        self.shape_shares = shape_shares
        self.latents: dict[int, torch.Tensor] = {}
        self.weights: dict[int, torch.Tensor | None] = {}
        self.scenes: dict[int, object] = {}

    @torch.no_grad()
    def get(self, index: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        """(latent, loss weight per latent cell or None, caption) of clip `index` in epoch `epoch`."""
        if self.folder is not None:
            video, text = self.folder.item(index)
            return *self.encode(video), text
        from model.data.shapes import render

        if index not in self.latents:
            scene, (width, height, frames) = pool_clip(self.config, self.seed, index, self.shape_shares)
            self.latents[index], self.weights[index] = self.encode(render(scene, width, height, frames))
            self.scenes[index] = scene
        return self.latents[index], self.weights[index], pool_caption(self.scenes[index], self.seed, index, epoch)

    def encode(self, video) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = video_to_tensor(video)[None].to(self.device)
        weight = None
        if self.config.flow.foreground_weight:
            weight = 1.0 + self.config.flow.foreground_weight * latent_foreground(x, self.config.vae)
        return self.vae.encode(x)[0], weight


def dit_batch(pool: LatentPool, position: int, token_budget: int) -> tuple[list[torch.Tensor], list, list[str], int]:
    """Packs clips from the seeded stream, starting at `position`, up to the token budget (NaViT).

    Returns the latents, their loss weights (None each without a foreground weight), captions and the next position.
    """
    latents, weights, captions, used = [], [], [], 0
    pool_size = pool.size if pool.folder is None else len(pool.folder.dataset)
    while True:
        epoch, offset = divmod(position, pool_size)
        index = int(rng_for(pool.seed, 6, epoch).permutation(pool_size)[offset]) if pool.folder is None else position
        latent, weight, text = pool.get(index, epoch)
        tokens = latent_tokens_of(pool.config, latent)
        if latents and used + tokens > token_budget:
            return latents, weights, captions, position
        latents.append(latent)
        weights.append(weight)
        captions.append(text)
        used += tokens
        position += 1


def train_dit(
    config: ModelConfig,
    vae_run: str | Path,
    out: str | Path,
    steps: int,
    seed: int = 0,
    lr: float | None = None,
    token_budget: int | None = None,
    checkpoint_every: int = 200,
    data: str = "shapes",
    device: str = "cpu",
    ema_decay: float = 0.999,
    pool_size: int = 8000,
    stop_after: int | None = None,
    init_from: str | Path | None = None,
    relearn_latents: bool = False,
    grow_depth: bool = False,
    train_only: tuple[str, ...] = (),
    shape_shares: tuple[float, ...] | None = None,
    log=print,
):
    """Trains (or continues training) the transformer on latents of the frozen autoencoder; exports at the end.

    With `init_from` (a model directory, e.g. weights/reel-shapes-v1) a new run starts from
    that model's transformer instead of random weights: fine-tuning, on Shapes or on a
    folder of videos, or going on from shipped weights when the run's own checkpoints are gone.
    With `relearn_latents` too, that model may have learned another autoencoder's latents: the
    layers that read and write latents start afresh, the rest (text, timestep, blocks) carries over.
    With `grow_depth` the preset's transformer may be deeper than that model's: its blocks are spread
    over the deeper network and the new ones start as the identity, so the run starts from the same function.
    With `train_only` (prefixes of parameter names, e.g. "output_conv.") only those parameters learn and
    the rest stay as they started: a new layer learns to work with the network as it is.
    With `shape_shares` (circle, square, triangle; Shapes data only) the clips show the shapes in
    those shares instead of evenly.
    """
    from model.dit import DiT
    from model.flow import flow_matching_loss, sample_timesteps, shift_timesteps, to_velocity
    from model.text import TextEncoder

    out = Path(out)
    vae, vae_model_config = load_trained_vae(vae_run, device)
    if vae_model_config.vae.network() != config.vae.network():
        raise ValueError(f"the autoencoder in {vae_run} was trained with a different VAEConfig than preset {config.name!r}")
    if shape_shares is not None:
        from model.data.shapes import check_shape_shares

        if data != "shapes":
            raise ValueError("shape_shares is for Shapes data (a folder's videos show what they show)")
        check_shape_shares(shape_shares)
    prepare_run(out, config, "dit")
    lr = lr or 3e-4
    token_budget = token_budget or 1024
    folder = None if data == "shapes" else FolderClips(data, seed, config)
    pool = LatentPool(vae, config, seed, pool_size, folder, device, shape_shares)
    text = TextEncoder(config.text, device=device)

    torch.manual_seed(seed)
    dit = DiT(config.dit).to(device)
    ema = {k: v.detach().clone() for k, v in dit.state_dict().items()}
    if train_only:
        names = [name for name, _ in dit.named_parameters()]
        unknown = [prefix for prefix in train_only if not any(name.startswith(prefix) for name in names)]
        if unknown:
            raise ValueError(f"train_only: preset {config.name!r} has no parameters named {', '.join(unknown)}*")
        for name, parameter in dit.named_parameters():
            parameter.requires_grad_(name.startswith(tuple(train_only)))
    optimizer = torch.optim.AdamW([p for p in dit.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99),
                                  weight_decay=0.0)
    # The latents come from this encoder: a run records it with the settings its data stream depends on
    # (and what learns, which a resume must keep).
    data_settings = {"pool_size": pool_size, "token_budget": token_budget, "encoder": encoder_fingerprint(vae),
                     "train_only": list(train_only), "shape_shares": None if shape_shares is None else list(shape_shares)}
    start, position, started_from = 0, 0, None if init_from is None else display_path(init_from)
    relearn_latents = relearn_latents and init_from is not None
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None:
        state = json.loads((checkpoint / "state.json").read_text())
        refuse_other_settings(out, state, data_settings)
        dit.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
        ema = load_file(str(checkpoint / "ema.safetensors"))
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        start, position, started_from = state["step"], state["data_position"], state.get("started_from")
        # Checkpoints written before relearn_latents was recorded come from runs that did not relearn.
        relearn_latents = state.get("relearn_latents", False)
        log(f"resuming from {checkpoint} at step {start}"
            + ("" if init_from is None else " (its own weights: --init-from applies only to a new run)"))
    elif init_from is not None:
        weights = starting_weights(init_from, config, data_settings["encoder"], relearn_latents, grow_depth)
        dit.load_state_dict({**dit.state_dict(), **weights})
        new_blocks = []
        if grow_depth:
            kept = {int(name.split(".")[1]) for name in weights if name.startswith("blocks.")}
            new_blocks = sorted(set(range(config.dit.depth)) - kept)
            dit.make_identity_blocks(new_blocks)
        new_conv = dit.output_conv is not None and not any(name.startswith("output_conv.") for name in weights)
        ema = {k: v.detach().clone() for k, v in dit.state_dict().items()}
        log(f"starting from the transformer of {init_from}" + (" (its latent layers afresh)" if relearn_latents else "")
            + (f" (new blocks {new_blocks} starting as the identity)" if new_blocks else "")
            + (" (its output convolution new, starting at zero)" if new_conv else ""))
    truncate_log(out, start)

    def checkpoint_now(step):
        tensors = {"model.safetensors": dit.state_dict(), "ema.safetensors": ema}
        state = {"step": step, "seed": seed, "stage": "dit", "data_position": position,
                 "started_from": started_from, "relearn_latents": relearn_latents, **data_settings}
        save_checkpoint(out, step, tensors, optimizer, state)

    dit.train()
    last_step = steps if stop_after is None else min(steps, start + stop_after)
    for step in range(start, last_step):
        began = time.time()
        latents, weights, captions, position = dit_batch(pool, position, token_budget)
        generator = torch_generator(seed, 7, step)
        # Caption dropout teaches the unconditional branch used by classifier-free guidance.
        keep = torch.rand(len(captions), generator=generator) >= config.flow.text_dropout
        captions = [c if k else "" for c, k in zip(captions, keep.tolist())]
        with torch.no_grad():
            text_states, text_mask = text.encode(captions)
        tokens = [latent_tokens_of(config, z) for z in latents]
        timesteps = shift_timesteps(sample_timesteps(len(latents), generator, config.flow), tokens, config.flow)
        noise = [torch.randn(z.shape, generator=generator) for z in latents]

        def velocity(xs, t):
            return to_velocity(dit(xs, t, text_states, text_mask), xs, t, config.flow)

        step_lr = learning_rate(step, steps, lr, warmup=min(500, steps // 10 + 1))
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        loss = flow_matching_loss(velocity, latents, timesteps, noise, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        optimizer.step()
        # EMA of the weights (as in DiT); early steps use a smaller decay so the average tracks warm-up.
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, value in dit.state_dict().items():
                if value.dtype.is_floating_point:
                    ema[name].mul_(decay).add_(value, alpha=1 - decay)
                else:
                    ema[name].copy_(value)
        record = {
            "step": step, "loss": loss.item(), "lr": step_lr, "seconds": time.time() - began,
            "grad_norm": float(grad_norm), "clips": len(latents),
        }
        append_log(out, record)
        if step % 25 == 0:
            log(json.dumps(record))
        if (step + 1) % checkpoint_every == 0 and step + 1 < last_step:
            checkpoint_now(step + 1)
    if last_step > start or checkpoint is None:
        checkpoint_now(last_step)
    if last_step < steps:
        return dit, ema
    export_model(out / "export", config, vae, ema)
    log(f"exported {out / 'export'}")
    return dit, ema


# The patch embedding, which reads latent patches, and the output layer with its modulation, which writes
# them: what --relearn-latents starts afresh. The rest never sees a latent value.
LATENT_LAYERS = ("x_embedder.", "final_layer.", "output_conv.")


def starting_weights(model_dir: str | Path, config: ModelConfig, encoder: str, relearn_latents: bool = False,
                     grow_depth: bool = False) -> dict:
    """The transformer weights of an exported model, if a run of `config` on the latents of the
    autoencoder whose encoder_fingerprint is `encoder` may start from them.

    With `relearn_latents` the model may come from another autoencoder, even one with other latent
    channels: only the weights outside LATENT_LAYERS are returned, for the run to start the rest afresh.
    With `grow_depth` the model may have fewer blocks than `config`: they are returned under the names
    of the places spread_blocks gives them, and the blocks between are left for the run to make.
    An output convolution that `config` has and the model lacks is left for the run too: it starts at
    zero, so the network starts as the model's.
    """
    model_dir = Path(model_dir)
    missing = [f for f in ("config.json", "dit.safetensors", "vae.safetensors") if not (model_dir / f).is_file()]
    if missing:
        raise ValueError(f"{model_dir} is not a model directory: missing {', '.join(missing)}")
    model_vae, model_config = load_trained_vae(model_dir)
    model_dit = model_config.dit
    if relearn_latents:
        model_dit = dataclasses.replace(model_dit, latent_channels=config.dit.latent_channels)
    if grow_depth:
        if model_dit.depth > config.dit.depth:
            raise ValueError(f"the transformer in {model_dir} has {model_dit.depth} blocks, more than the "
                             f"{config.dit.depth} of preset {config.name!r} (--grow-depth only adds blocks)")
        model_dit = dataclasses.replace(model_dit, depth=config.dit.depth)
    if not model_dit.output_conv_channels:
        model_dit = dataclasses.replace(model_dit, output_conv_channels=config.dit.output_conv_channels)
    if model_dit != config.dit or model_config.flow.prediction != config.flow.prediction:
        only_shallower = (model_dit.depth < config.dit.depth
                          and dataclasses.replace(model_dit, depth=config.dit.depth) == config.dit)
        raise ValueError(f"the transformer in {model_dir} is not the one preset {config.name!r} builds "
                         "(the network and what it predicts must match"
                         + ("; --grow-depth starts a deeper one from it)" if only_shallower else ")"))
    weights = load_file(str(model_dir / "dit.safetensors"))
    if grow_depth:
        weights = spread_blocks(weights, model_config.dit.depth, config.dit.depth)
    if relearn_latents:
        return {name: value for name, value in weights.items() if not name.startswith(LATENT_LAYERS)}
    # Its weights mean something only on the latents it learned: the same encoder and latent statistics.
    if encoder_fingerprint(model_vae) != encoder:
        raise ValueError(f"the transformer in {model_dir} learned the latents of another autoencoder than --vae's "
                         "(--relearn-latents starts from it anyway, its latent layers afresh)")
    return weights


def spread_blocks(weights: dict, depth: int, new_depth: int) -> dict:
    """A transformer's weights with block i renamed to its place among new_depth blocks.

    The new blocks are spread evenly between the old ones (8 into 12: one after every second
    block), so that no stretch of the network changes more than another, the last one included.
    """
    extra = new_depth - depth
    place = {i: i + i * extra // depth for i in range(depth)}
    spread = {}
    for name, value in weights.items():
        if name.startswith("blocks."):
            _, index, rest = name.split(".", 2)
            name = f"blocks.{place[int(index)]}.{rest}"
        spread[name] = value
    return spread


def export_model(path: Path, config: ModelConfig, vae: CausalVAE, dit_state: dict) -> None:
    """Writes the pipeline's format: config.json, vae.safetensors, dit.safetensors (TextToVideo.from_pretrained)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(config.to_json())
    save_file({k: v.detach().contiguous() for k, v in vae.state_dict().items()}, str(tmp / "vae.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in dit_state.items()}, str(tmp / "dit.safetensors"))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def export_checkpoint(dit_run: str | Path, vae_run: str | Path, path: str | Path, sampler: str | None = None,
                      sample_steps: int | None = None) -> int:
    """Exports the EMA weights of a dit run's newest checkpoint, finished or not; returns its step.

    A run that spans several processes can be shipped as it stands, and later
    replaced by the export of the finished run. `sampler` and `sample_steps` set
    the exported model's default sampling, chosen by evaluating the trained weights.
    """
    dit_run = Path(dit_run)
    checkpoint = latest_checkpoint(dit_run)
    if checkpoint is None:
        raise ValueError(f"{dit_run}: no checkpoint yet")
    saved = json.loads((dit_run / "config.json").read_text())
    if saved.get("stage") != "dit":
        raise ValueError(f"{dit_run} is not a dit run")
    config = ModelConfig.from_dict(saved["model"])
    flow = dataclasses.replace(config.flow, sampler=config.flow.sampler if sampler is None else sampler,
                               steps=config.flow.steps if sample_steps is None else sample_steps)
    config = dataclasses.replace(config, flow=flow)
    state = json.loads((checkpoint / "state.json").read_text())
    vae, vae_config = load_trained_vae(vae_run)
    # Any decoder will do (a decoder run's is the better one), but the latents must be the ones it learned.
    fingerprint = encoder_fingerprint(vae)
    if vae_config.vae.network() != config.vae.network() or state.get("encoder", fingerprint) != fingerprint:
        raise ValueError(f"the autoencoder in {vae_run} does not encode as the one {dit_run} was trained with")
    export_model(Path(path), config, vae, load_file(str(checkpoint / "ema.safetensors")))
    return state["step"]


# -----------------------------------------------------------------------------
# the command and the loss plot


def plot_loss(log_path: str | Path, png_path: str | Path, title: str | None = None, smooth: int = 50) -> None:
    """Loss curve (raw and a running mean) from a run's log.jsonl, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{log_path}: no log lines")
    steps = np.array([r["step"] for r in records])
    losses = np.array([r["loss"] for r in records])
    window = max(1, min(smooth, len(losses)))
    running = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, alpha=0.3, linewidth=0.8, label="loss")
    ax.plot(steps[window - 1 :], running, linewidth=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title or str(Path(log_path).parent.name))
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def train_command(args) -> int:
    # One thread is the right choice on a shared 2-core machine: a second OpenMP thread that
    # another process keeps descheduled stalls every parallel op (benchmarks/RESULTS.md).
    torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    # A model may be named as everywhere else (reel-shapes-v1) as well as given by its directory.
    vae_run = args.vae and (checkpoint_dir(args.vae) or args.vae)
    if args.stage == "export":
        if not (args.vae and args.to):
            raise SystemExit("reel train export needs --vae <the autoencoder's run> and --to <model directory>")
        try:
            step = export_checkpoint(args.out, vae_run, args.to, sampler=args.sampler, sample_steps=args.sample_steps)
        except (ValueError, FileNotFoundError) as error:  # a run that is not one, or settings it refuses
            raise SystemExit(f"reel train export: {error}") from None
        print(f"exported {args.out} at step {step} to {args.to}")
        return 0
    config = preset(args.preset)
    init_from = args.init_from and checkpoint_dir(args.init_from)
    if args.init_from and init_from is None:
        raise SystemExit(f"--init-from: no model {args.init_from!r} (a model directory, or a name under weights/)")
    if args.init_from and args.stage != "dit":
        raise SystemExit("--init-from is for the dit stage (a decoder stage starts from its --vae)")
    denoised_by = args.denoised_by and checkpoint_dir(args.denoised_by)
    if args.denoised_by and denoised_by is None:
        raise SystemExit(f"--denoised-by: no model {args.denoised_by!r} (a model directory, or a name under weights/)")
    if args.denoised_by and args.stage != "decoder":
        raise SystemExit("--denoised-by is for the decoder stage")
    for flag, given in (("--relearn-latents", args.relearn_latents), ("--grow-depth", args.grow_depth)):
        if given and not args.init_from:
            raise SystemExit(f"{flag} goes with --init-from (the model whose transformer the run starts from)")
    if args.train_only is not None and args.stage != "dit":
        raise SystemExit("--train-only is for the dit stage")
    train_only = tuple(prefix for prefix in (args.train_only or "").split(",") if prefix)
    shape_shares = None
    if args.shape_shares is not None:
        if args.stage != "dit" or args.data != "shapes":
            raise SystemExit("--shape-shares is for the dit stage on Shapes data")
        try:
            shape_shares = tuple(float(share) for share in args.shape_shares.split(","))
        except ValueError:
            raise SystemExit(f"--shape-shares takes three numbers separated by commas, got {args.shape_shares!r}") from None
    if args.steps is None or args.steps < 1:
        raise SystemExit("--steps must be at least 1")
    if args.stop_after is not None and args.stop_after < 1:
        raise SystemExit("--stop-after must be at least 1")
    if args.data != "shapes" and not Path(args.data).is_dir():
        raise SystemExit(f"--data must be 'shapes' or a folder of videos, got {args.data!r}")
    common = dict(
        steps=args.steps, seed=args.seed, lr=args.lr, checkpoint_every=args.checkpoint_every,
        data=args.data, device=args.device, stop_after=args.stop_after, log=functools.partial(print, flush=True),
    )
    frame_options = {}
    if args.frame_weights is not None:
        if args.stage not in ("vae", "decoder"):
            raise SystemExit("--frame-weights is for the vae and decoder stages")
        if args.data != "shapes":
            raise SystemExit("--frame-weights is for Shapes data (a folder's videos keep their own length)")
        try:
            frame_options["frame_weights"] = tuple(float(w) for w in args.frame_weights.split(","))
        except ValueError:
            raise SystemExit(f"--frame-weights takes three numbers separated by commas, got {args.frame_weights!r}") from None
    if args.stage in ("decoder", "dit") and not args.vae:
        raise SystemExit(f"reel train {args.stage} needs --vae <the autoencoder's run directory, or a model>")
    try:
        if args.stage == "vae":
            shares = {} if args.stills_share is None else {"stills_share": args.stills_share}
            train_vae(config, args.out, pixel_budget=args.token_budget, **shares, **frame_options, **common)
        elif args.stage == "decoder":
            train_vae(config, args.out, pixel_budget=args.token_budget, frozen_encoder_from=vae_run,
                      denoised_by=denoised_by, **frame_options, **common)
        else:
            pool = {} if args.pool_size is None else {"pool_size": args.pool_size}
            train_dit(config, vae_run, args.out, token_budget=args.token_budget, init_from=init_from,
                      relearn_latents=args.relearn_latents, grow_depth=args.grow_depth, train_only=train_only,
                      shape_shares=shape_shares, **pool, **common)
    except (ValueError, FileNotFoundError) as error:  # data, a model or a run directory it cannot use
        raise SystemExit(f"reel train {args.stage}: {error}") from None
    plot_loss(Path(args.out) / "log.jsonl", Path(args.out) / "loss.png", title=f"{args.stage} {args.preset}")
    return 0
