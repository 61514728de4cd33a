"""Where the seconds of a video go, and how our DiT compares with diffusers' video transformers.

For each clip shape (default 64x64x17 and 112x64x33):
  1. the pipeline's parts: text encoding (cold cache, prompt and ""), every
     sampler step, VAE decode;
  2. one DiT forward over the guidance batch the sampler really runs (the
     conditional and unconditional rows), its FLOPs (counted with
     torch.utils.flop_counter, attention included), achieved GFLOP/s and the
     share of this machine's fp32 matmul rate (MFU), measured in the same run;
  3. the same forward for diffusers' WanTransformer3DModel and
     CogVideoXTransformer3DModel at the same width, depth, heads, MLP width,
     latent channels, patch size, token count and text length, timed
     round-robin in this process (so background load hits all of them alike),
     each with its peak-memory increase measured in a fresh subprocess.

    python benchmarks/sampler.py                         # shapes-s10 (the bundled preset), random weights
    python benchmarks/sampler.py --model weights/reel-shapes-v1 --write-results

fp32, torch.inference_mode(), torch.set_num_threads(2) unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    command_line,
    load_average,
    machine_line,
    markdown_table,
    max_rss_kib,
    median_seconds,
    reset_peak_rss,
    stamp,
    text_table,
    write_section,
)

PROMPT = "a red circle moving left on a blue background"
PEERS = ("wan", "cogvideox")


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        width, height, frames = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be WIDTHxHEIGHTxFRAMES such as 64x64x17, got {text!r}") from None
    return width, height, frames


# ---------------------------------------------------------------------------
# The machine's fp32 matmul rate
# ---------------------------------------------------------------------------


def sgemm_rate(size: int, repeats: int) -> tuple[float, float]:
    """Median GFLOP/s of a square fp32 matmul (2 n^3 FLOPs), and its median seconds."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    seconds, _ = median_seconds(lambda: torch.mm(a, b, out=out), repeats, warmup=2)
    return 2 * size**3 / seconds / 1e9, seconds


# ---------------------------------------------------------------------------
# FLOP counting: FlopCounterMode knows matmuls and the CUDA attention kernels;
# the CPU attention kernel is added here (two matmuls: Q K^T and P V).
# ---------------------------------------------------------------------------


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs):
    batch, heads, queries, head_dim = query
    keys = key[-2]
    return 2 * 2 * batch * heads * queries * keys * head_dim


def count_flops(fn) -> int:
    mapping = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


# ---------------------------------------------------------------------------
# The three transformers, built for one clip shape
# ---------------------------------------------------------------------------


def dit_config(model_arg: str | None):
    from model.config import ModelConfig, preset
    from model.pipeline import checkpoint_dir

    if model_arg is None:
        return preset("shapes-s10")
    path = checkpoint_dir(model_arg)
    return preset(model_arg) if path is None else ModelConfig.from_json((path / "config.json").read_text())


def build_forward(name: str, config, shape, text_lengths: tuple[int, int], dit=None, seed: int = 0):
    """A no-argument callable running one forward of transformer `name` over the guidance batch.

    The batch is what the sampler runs for one video with guidance: two rows of
    latent `shape`, the first with the prompt's text_lengths[0] tokens, the second
    with the empty prompt's text_lengths[1]. Our DiT packs both rows (rows of one
    length attend as a batch, without a mask) and sees only the valid text tokens; the
    peers take a (2, ...) batch and, having no text mask in these classes, attend
    to all text_lengths[0] tokens of both rows.
    Returns (callable, parameter count).
    """
    torch.manual_seed(seed)
    d = config.dit
    C, t, h, w = shape
    L = max(text_lengths)
    text_states = torch.randn(2, L, d.text_dim)
    timesteps = torch.tensor([0.7, 0.7])
    if name == "reel":
        from model.dit import DiT

        model = dit if dit is not None else DiT(d).eval()
        text_mask = torch.zeros(2, L, dtype=torch.bool)
        for row, n in enumerate(text_lengths):
            text_mask[row, :n] = True
        latents = [torch.randn(shape), torch.randn(shape)]
        packing = model.prepare([shape, shape], text_mask)  # as the pipeline does: once per sampling run

        def forward():
            return model(latents, timesteps, text_states, text_mask, packing=packing)

    elif name == "wan":
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel(
            patch_size=tuple(d.patch_size),
            num_attention_heads=d.num_heads,
            attention_head_dim=d.hidden_size // d.num_heads,
            in_channels=C,
            out_channels=C,
            text_dim=d.text_dim,
            freq_dim=256,
            ffn_dim=int(d.hidden_size * d.mlp_ratio),
            num_layers=d.depth,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        ).eval()
        latents = torch.randn(2, C, t, h, w)

        def forward():
            # Wan's timestep embedding expects the 0..1000 scale.
            return model(latents, timesteps * 1000, text_states, return_dict=False)[0]

    elif name == "cogvideox":
        from diffusers import CogVideoXTransformer3DModel
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        if d.patch_size[0] != 1 or d.patch_size[1] != d.patch_size[2]:
            raise ValueError(f"CogVideoX needs a (1, p, p) patch, the model has {d.patch_size}")
        patch = d.patch_size[1]
        head_dim = d.hidden_size // d.num_heads
        tf = config.vae.temporal_factor
        model = CogVideoXTransformer3DModel(
            num_attention_heads=d.num_heads,
            attention_head_dim=head_dim,
            in_channels=C,
            out_channels=C,
            time_embed_dim=d.hidden_size,
            text_embed_dim=d.text_dim,
            num_layers=d.depth,
            sample_width=w,
            sample_height=h,
            sample_frames=(t - 1) * tf + 1,
            patch_size=patch,
            patch_size_t=None,
            temporal_compression_ratio=tf,
            max_text_seq_length=L,
            activation_fn="gelu-approximate",
            norm_eps=1e-6,
            use_rotary_positional_embeddings=True,
        ).eval()
        # CogVideoX's feed-forward is 4x wide, like mlp_ratio 4; say so if the preset differs.
        if d.mlp_ratio != 4.0:
            print(f"note: CogVideoX uses a 4x MLP; the model's mlp_ratio is {d.mlp_ratio}", file=sys.stderr)
        gh, gw = h // patch, w // patch
        rotary = get_3d_rotary_pos_embed(
            embed_dim=head_dim, crops_coords=((0, 0), (gh, gw)), grid_size=(gh, gw), temporal_size=t
        )
        latents = torch.randn(2, t, C, h, w)

        def forward():
            return model(latents, text_states, timesteps * 1000, image_rotary_emb=rotary, return_dict=False)[0]

    else:
        raise ValueError(f"unknown transformer {name!r}")
    parameters = sum(p.numel() for p in model.parameters())
    return forward, parameters


# ---------------------------------------------------------------------------
# Peak memory: a fresh interpreter per transformer and shape
# ---------------------------------------------------------------------------


def memory_child(args) -> None:
    """Runs in a subprocess: the peak-RSS increase of the first forward and of a later one, in KiB."""
    torch.set_num_threads(args.threads)
    config = dit_config(args.model)
    width, height, frames = args.shapes[0]
    shape = config.vae.latent_shape(width, height, frames)
    lengths = tuple(int(v) for v in args.text_lengths.split(","))
    with torch.inference_mode():
        forward, _ = build_forward(args.memory_child, config, shape, lengths)
        reset = reset_peak_rss()
        before = max_rss_kib()
        forward()
        first = max_rss_kib() - before
        for _ in range(2):
            forward()
        reset_peak_rss()
        before_later = max_rss_kib()
        forward()
        later = max_rss_kib() - before_later
        peak = max_rss_kib()
    print(json.dumps({"first_kib": first, "later_kib": later, "rss_kib": peak, "peak_reset": reset}))


def measure_memory(name: str, args, shape_text: str, text_lengths) -> dict:
    command = [
        sys.executable, __file__, "--memory-child", name, "--shapes", shape_text,
        "--threads", str(args.threads), "--text-lengths", ",".join(map(str, text_lengths)),
    ]
    if args.model:
        command += ["--model", args.model]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise RuntimeError(f"memory subprocess for {name} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# The pipeline's parts
# ---------------------------------------------------------------------------


def pipeline_parts(pipe, spec, repeats: int, sampler: str | None) -> dict:
    """Seconds of text encoding (cold), each sampler step, and VAE decode for one spec."""
    text = pipe.text
    prompts = [spec.prompt, spec.negative_prompt]

    def encode_cold():
        # The encoder keeps an LRU cache per prompt; a new request's prompt is a miss.
        text._cache.clear()
        text.encode(prompts)

    text_seconds, _ = median_seconds(encode_cold, repeats)
    text.encode(prompts)  # leave both prompts cached so the sampling below times the sampler only

    marks = []

    def on_step(i, n):
        marks.append(time.perf_counter())

    start = time.perf_counter()
    latents = pipe.sample_latents([spec], on_step=on_step, sampler=sampler)
    steps = [b - a for a, b in zip([start] + marks[:-1], marks)]
    decode_seconds, _ = median_seconds(lambda: pipe.decode(latents), repeats)
    return {"text": text_seconds, "steps": steps, "decode": decode_seconds}


# ---------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory or preset (default: shapes-s10 with random weights)")
    parser.add_argument("--shapes", type=lambda s: [parse_shape(v) for v in s.split(",")],
                        default=[(64, 64, 17), (112, 64, 33)], help="WxHxT list (default 64x64x17,112x64x33)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sgemm-size", type=int, default=1024)
    parser.add_argument("--sampler", choices=("euler", "heun"), help="default: the model's FlowConfig")
    parser.add_argument("--steps", type=int, help="sampler steps for the per-step breakdown (default: the model's)")
    parser.add_argument("--peers", default=",".join(PEERS), help="diffusers transformers to compare ('' for none)")
    parser.add_argument("--skip-pipeline", action="store_true", help="only the transformer comparison")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--write-results", action="store_true", help="replace the sampler section of RESULTS.md")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--text-lengths", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    if args.memory_child:
        memory_child(args)
        return

    torch.set_num_threads(args.threads)
    from model import TextToVideo, VideoSpec

    load_start = os.getloadavg()
    started = time.perf_counter()
    pipe = TextToVideo.load(args.model) if args.model else TextToVideo.from_preset("shapes-s10")
    config = pipe.config
    model_name = args.model or "shapes-s10 (random weights)"
    flow = config.flow
    sampler = args.sampler or flow.sampler
    steps = args.steps or flow.steps
    print(f"model {model_name}; {machine_line(args.threads)}; load average {load_average()}")

    with torch.inference_mode():
        peak_gflops, sgemm_seconds = sgemm_rate(args.sgemm_size, max(args.repeats, 5))
    print(f"fp32 sgemm {args.sgemm_size}^3: {peak_gflops:.1f} GFLOP/s (median of {max(args.repeats, 5)}, "
          f"{sgemm_seconds * 1e3:.1f} ms each)")

    text_lengths = tuple(int(n) for n in pipe.text.encode([PROMPT, ""])[1].sum(dim=1))
    part_rows, dit_rows = [], []
    for width, height, frames in args.shapes:
        spec = VideoSpec(PROMPT, width=width, height=height, frames=frames, steps=steps)
        shape = pipe.latent_shape(spec)
        tokens = math.prod(pipe.dit.grid(shape))
        label = f"{width}x{height}x{frames}"

        if not args.skip_pipeline:
            with torch.inference_mode():
                parts = pipeline_parts(pipe, spec, args.repeats, sampler)
            s = parts["steps"]
            total = parts["text"] + sum(s) + parts["decode"]
            part_rows.append([
                label, f"{shape}", tokens, f"{sampler} x{steps}", f"{parts['text']:.3f}",
                f"{s[0]:.3f}", f"{statistics.median(s):.3f}", f"{min(s):.3f}", f"{max(s):.3f}", f"{sum(s):.2f}",
                f"{parts['decode']:.3f}", f"{total:.2f}", load_average(),
            ])
            print(text_table(PART_HEADER, [part_rows[-1]]))

        # Transformer forwards, round-robin so that load spikes spread over every model.
        names = ["reel"] + peers
        forwards, flops, params = {}, {}, {}
        with torch.inference_mode():
            for name in names:
                forwards[name], params[name] = build_forward(
                    name, config, shape, text_lengths, dit=pipe.dit if name == "reel" else None
                )
                forwards[name]()  # warm-up (and one-time allocations)
                flops[name] = count_flops(forwards[name])
            times = {name: [] for name in names}
            for _ in range(args.repeats):
                for name in names:
                    start = time.perf_counter()
                    forwards[name]()
                    times[name].append(time.perf_counter() - start)
        del forwards
        memory = {}
        if not args.no_memory:
            for name in names:
                m = measure_memory(name, args, label, text_lengths)
                if not m["peak_reset"]:
                    print("warning: could not reset the peak RSS; memory figures include start-up", file=sys.stderr)
                memory[name] = (m["first_kib"] / 1024, m["later_kib"] / 1024, m["rss_kib"] / 1024)
        for name in names:
            seconds = statistics.median(times[name])
            gflops = flops[name] / seconds / 1e9
            mem = "{:.1f} / {:.1f} / {:.0f}".format(*memory[name]) if name in memory else "-"
            dit_rows.append([
                label, DISPLAY[name], f"{params[name] / 1e6:.2f}", f"2 x {tokens}",
                f"{flops[name] / 1e9:.3f}", f"{seconds * 1e3:.1f}", f"{min(times[name]) * 1e3:.1f}",
                f"{gflops:.1f}", f"{100 * gflops / peak_gflops:.1f}%", mem, load_average(),
            ])
        print(text_table(DIT_HEADER, dit_rows[-len(names):]))

    elapsed = time.perf_counter() - started
    print(f"done in {elapsed:.0f} s; load average {load_average()}")
    if args.write_results:
        body = [
            "## Sampler: pipeline parts and transformer forward",
            "",
            f"- Taken {stamp()} with `{command_line()}` ({elapsed:.0f} s).",
            f"- Model: {model_name}. Machine: {machine_line(args.threads)}. fp32, `torch.inference_mode()`.",
            f"- Load average (1/5/15 min) at the start: {load_start[0]:.2f} / {load_start[1]:.2f} / "
            f"{load_start[2]:.2f}; at the end: {load_average()}; each row also carries the load when it was taken.",
            f"- Machine fp32 matmul rate: {peak_gflops:.1f} GFLOP/s ({args.sgemm_size}x{args.sgemm_size} sgemm, "
            f"median of {max(args.repeats, 5)} runs, same process).",
            f"- Prompt: \"{PROMPT}\" ({text_lengths[0]} tokens) and \"\" ({text_lengths[1]} tokens), "
            f"guidance {flow.guidance} (both rows in one forward).",
            "",
        ]
        if part_rows:
            body += [
                "### Seconds per video, by part",
                "",
                "Text: both prompts encoded with an empty cache (median). Steps: wall time of each sampler "
                "step from `on_step` callbacks (step 1 includes noise and the packing); decode: VAE decode (median).",
                "",
                markdown_table(PART_HEADER, part_rows),
                "",
            ]
        body += [
            "### Transformer forward (one guided step: 2 rows)",
            "",
            f"Median and min of {args.repeats} round-robin runs after one warm-up. GFLOP: counted by "
            "`torch.utils.flop_counter.FlopCounterMode` (matmuls + attention, as executed: the two rows of "
            "a guided pair have one length, so our self-attention runs them as a batch of two N x N score matrices). "
            "MFU = GFLOP/s over the sgemm rate above. Memory, MiB, each transformer in a fresh subprocess: "
            "increase of the peak RSS (VmHWM in `/proc/self/status`, reset through `/proc/self/clear_refs` just "
            "before; not `ru_maxrss`, which on Linux inherits the peak of the parent process) over the first forward (with torch's one-time allocations) and "
            "over a later forward (activations the allocator could not reuse), then the process's peak RSS "
            "(torch, the imports and the weights included). tracemalloc cannot see torch tensors.",
            "",
            markdown_table(DIT_HEADER, dit_rows),
            "",
            PEER_SETTINGS,
        ]
        write_section("sampler" + ("" if args.threads == 2 else f"-threads{args.threads}"), "\n".join(body))
        print("wrote benchmarks/RESULTS.md")


PART_HEADER = ["clip WxHxT", "latent (C,t,h,w)", "tokens/row", "sampler", "text s", "step 1 s", "step median s",
               "step min s", "step max s", "all steps s", "decode s", "total s", "load 1/5/15"]
DIT_HEADER = ["clip", "transformer", "params M", "tokens", "GFLOP/fwd", "median ms", "min ms", "GFLOP/s", "MFU",
              "mem MiB (1st fwd / later fwd / RSS)", "load 1/5/15"]
DISPLAY = {"reel": "reel DiT", "wan": "diffusers Wan", "cogvideox": "diffusers CogVideoX"}

PEER_SETTINGS = """Settings of the peers (diffusers' classes, random weights), chosen to match the model:
- Both: `num_attention_heads` = heads, `attention_head_dim` = width / heads, `num_layers` = depth,
  `in_channels` = `out_channels` = latent channels, text width = 384 (MiniLM), fp32, batch 2 (the guided
  pair) of the same latent; timesteps on the 0..1000 scale they expect. They have no text mask in these
  classes, so both rows attend to all of the prompt's text positions (the empty prompt's row is padded).
- `WanTransformer3DModel`: `patch_size` = the model's (1, 2, 2), `ffn_dim` = width x mlp_ratio,
  `freq_dim` 256 (as ours), `cross_attn_norm=True` (ours also normalises before cross-attention),
  `qk_norm="rms_norm_across_heads"` (Wan's own; ours normalises per head), `eps` 1e-6, `rope_max_seq_len` 1024.
  Same block structure as ours (self-attn, cross-attn, MLP; shared timestep projection + per-block table).
- `CogVideoXTransformer3DModel`: `patch_size` 2 with `patch_size_t=None` (spatial-only patches = (1, 2, 2)),
  `time_embed_dim` = width (ours embeds the timestep at the model width), `max_text_seq_length` = the text length,
  `sample_width/height/frames` = this clip's latent size (so no positional table is rebuilt per call),
  `use_rotary_positional_embeddings=True` (3D RoPE, tables computed once outside the timing, as ours are),
  gelu-tanh 4x MLP, `norm_eps` 1e-6. Its blocks differ by design: text tokens join the video tokens in one
  full self-attention (no cross-attention), and each block has its own adaLN projections."""


if __name__ == "__main__":
    main()
