"""What two of the transformer's speed choices are worth, each against the plain way, in one process.

1. Packed samples of different lengths attend block by block (model.dit.attend_by_runs);
   the baseline computes the whole N x N score matrix under the block-diagonal mask.
2. The MLP's tanh-GELU, without gradients on the CPU, as x * sigmoid(2z) (model.dit.gelu_tanh);
   the baseline is torch's fused tanh-GELU kernel.

Workloads, on the preset's transformer (random weights: the work does not depend on them):
  - train: one training step (forward, flow-matching loss, backward) over a packed batch of
    mixed clip shapes drawn as the transformer's training draws them, up to its token budget;
  - serve: one guided sampler step (conditional and unconditional rows) for requests of
    different sizes packed together, as the worker batches them;
  - serve-one: the guided pair of one 112x64x33 request (one length, so one block: only the
    GELU differs).
Training is timed with the block-by-block attention and without it only: with gradients on,
gelu_tanh uses torch's kernel anyway.

Variants run round-robin in this process (background load hits them alike); peak memory
comes from a fresh subprocess per variant and workload.

    python benchmarks/dit_choices.py --threads 1 --repeats 11
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
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

from model import dit
from model.config import preset
from model.flow import flow_matching_loss
from model.patches import additive_mask, num_tokens

WORKLOADS = ("train", "serve", "serve-one")
VARIANTS = {
    "as shipped": (dit.attend_by_runs, dit.gelu_tanh),
    "whole mask": ("whole-mask", dit.gelu_tanh),
    "tanh kernel": (dit.attend_by_runs, "tanh-kernel"),
    "both plain": ("whole-mask", "tanh-kernel"),
}
SERVED = [(64, 64, 17), (112, 64, 33), (64, 112, 9), (96, 96, 17)]  # the requests packed together in `serve`


_masks: dict[tuple, torch.Tensor] = {}


def attend_under_whole_mask(q, k, v, runs):
    # The baseline: one attention call over all N tokens with the additive block-diagonal mask,
    # built once per packing as the model did before it attended block by block.
    if tuple(runs) not in _masks:
        lengths = [length for count, length in runs for _ in range(count)]
        ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        _masks[tuple(runs)] = additive_mask(ids[:, None] == ids[None, :])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_masks[tuple(runs)])


def tanh_kernel(x):
    return F.gelu(x, approximate="tanh")


def use(variant: str) -> None:
    attention, gelu = VARIANTS[variant]
    dit.attend_by_runs = attend_under_whole_mask if attention == "whole-mask" else attention
    dit.gelu_tanh = tanh_kernel if gelu == "tanh-kernel" else gelu


def training_batch(config, token_budget: int, seed: int) -> list[tuple[int, int, int, int]]:
    # Latent shapes as the transformer's training packs them: a size and a frame count per clip,
    # drawn at random, clips added until the next would pass the token budget.
    from model.train import FRAME_COUNTS

    rng = np.random.default_rng(seed)
    shapes, used = [], 0
    while True:
        width, height = config.sizes[int(rng.integers(len(config.sizes)))]
        shape = config.vae.latent_shape(width, height, FRAME_COUNTS[int(rng.integers(len(FRAME_COUNTS)))])
        tokens = num_tokens(shape, config.dit.patch_size)
        if shapes and used + tokens > token_budget:
            return shapes
        shapes.append(shape)
        used += tokens


def build(workload: str, preset_name: str, token_budget: int):
    """(a no-argument callable running the workload once, its latent shapes)."""
    config = preset(preset_name)
    torch.manual_seed(0)
    network = dit.DiT(config.dit)
    with torch.no_grad():  # every weight non-zero, so every branch does its work as a trained one does
        for p in network.parameters():
            p.normal_(0, 0.02)
    if workload == "train":
        shapes = training_batch(config, token_budget, seed=0)
    elif workload == "serve":
        shapes = [config.vae.latent_shape(*clip) for clip in SERVED] * 2  # conditional rows, then unconditional
    else:
        shapes = [config.vae.latent_shape(112, 64, 33)] * 2
    B = len(shapes)
    text_states = torch.randn(B, 12, config.dit.text_dim)
    text_mask = torch.ones(B, 12, dtype=torch.bool)
    text_mask[B // 2:, 2:] = False  # serving: the unconditional rows' "" has two tokens (training: short captions)
    latents = [torch.randn(s) for s in shapes]
    timesteps = torch.rand(B)
    if workload == "train":
        network.train()
        noise = [torch.randn(s) for s in shapes]

        def run():
            network.zero_grad(set_to_none=True)
            loss = flow_matching_loss(lambda x, t: network(x, t, text_states, text_mask), latents, timesteps, noise)
            loss.backward()
    else:
        network.eval()
        packing = network.prepare(shapes, text_mask)

        def run():
            with torch.inference_mode():
                network(latents, timesteps, text_states, text_mask, packing=packing)

    return run, shapes


def memory_child(args) -> None:
    torch.set_num_threads(args.threads)
    use(args.variant)
    run, _ = build(args.memory_child, args.preset, args.token_budget)
    for _ in range(2):
        run()
    reset = reset_peak_rss()
    before = max_rss_kib()
    run()
    print(json.dumps({"later_kib": max_rss_kib() - before, "peak_reset": reset}))


def measure_memory(args, workload: str, variant: str) -> float:
    command = [sys.executable, __file__, "--memory-child", workload, "--variant", variant, "--preset", args.preset,
               "--threads", str(args.threads), "--token-budget", str(args.token_budget)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode:
        raise RuntimeError(f"memory subprocess for {workload} / {variant} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["later_kib"] / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="shapes-s5",
                        help="the transformer to time (random weights); the recorded section used shapes-s5, whose "
                             "transformer the shipped shapes-s10 shares (it sees more tokens per clip)")
    parser.add_argument("--repeats", type=int, default=11, help="timed runs per variant and workload (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--token-budget", type=int, default=1024, help="tokens per training batch (train_dit's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--write-results", action="store_true", help="replace the dit-choices section of RESULTS.md")
    parser.add_argument("--memory-child", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_start = load_average()
    print(f"preset {args.preset} (random weights); {machine_line(args.threads)}; load average {load_start}")
    header = ["workload", "latents (C,t,h,w)", "tokens", "variant", "median ms", "min ms", "vs as shipped",
              "peak MiB over a step", "load 1/5/15"]
    rows = []
    config = preset(args.preset)
    for workload in WORKLOADS:
        run, shapes = build(workload, args.preset, args.token_budget)
        tokens = [num_tokens(s, config.dit.patch_size) for s in shapes]
        # Training keeps the fused GELU kernel (gelu_tanh takes it when gradients are on), and one
        # request's rows have one length (one block: nothing to mask).
        variants = {"train": ["as shipped", "whole mask"], "serve": list(VARIANTS),
                    "serve-one": ["as shipped", "tanh kernel"]}[workload]
        # Round-robin: one run of each variant in turn, so drifting load hits all of them alike.
        times = {v: [] for v in variants}
        for v in variants:
            use(v)
            run()  # warm-up
        for _ in range(args.repeats):
            for v in variants:
                use(v)
                times[v].append(median_seconds(run, 1, warmup=0)[0])
        use("as shipped")
        shipped = statistics.median(times["as shipped"])
        counts = sorted({s: shapes.count(s) for s in shapes}.items(), key=lambda kv: -kv[1])
        latents_text = ", ".join(f"{n} x {s}" for s, n in counts)
        for v in variants:
            median = statistics.median(times[v])
            memory = "-" if args.no_memory else f"{measure_memory(args, workload, v):.1f}"
            rows.append([
                workload, latents_text, f"{sum(tokens)} ({len(tokens)} rows)", v,
                f"{median * 1e3:.1f}", f"{min(times[v]) * 1e3:.1f}", f"{median / shipped:.2f}x", memory, load_average(),
            ])
        print(text_table(header, rows[-len(variants):]), flush=True)
    elapsed = time.perf_counter() - started
    print(f"done in {elapsed:.0f} s; load average {load_average()}")
    if args.write_results:
        body = [
            "## The transformer's speed choices against the plain way",
            "",
            f"- Taken {stamp()} with `{command_line()}` ({elapsed:.0f} s).",
            f"- Transformer: {args.preset} (random weights, every one non-zero). Machine: {machine_line(args.threads)}. fp32.",
            f"- Load average (1/5/15 min) at the start: {load_start}; at the end: {load_average()}.",
            (f"- Median of {args.repeats} round-robin runs after one warm-up each. `whole mask`: self-attention over "
             "all packed tokens under the block-diagonal mask (the N x N score matrix); `tanh kernel`: torch's fused "
             "tanh-GELU. `train`: forward, flow-matching loss and backward over a batch packed as training packs "
             "it; `serve`: one guided step for four requests of different sizes packed together; `serve-one`: "
             "the guided pair of one request. Peak MiB: the increase of the peak RSS over one later run, in a "
             "fresh subprocess per row."),
            "",
            markdown_table(header, rows),
        ]
        write_section("dit-choices", "\n".join(body))
        print("wrote the dit-choices section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
