"""`reel`: one command for every part of the service and the model.

Each subcommand imports what it needs when it runs, so that `reel api` and
`reel keys` never load torch, and `reel train` never loads the web stack.
"""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    from app.embedded import serve

    return serve(host=args.host, port=args.port, data_dir=args.data_dir, api_key=args.api_key, model=args.model)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port, workers=args.workers)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    return run_worker(queues=args.queues, concurrency=args.concurrency, pool=args.pool, model=args.model)


def _keys(args: argparse.Namespace) -> int:
    from app.auth import keys_command

    return keys_command(args)


def _generate(args: argparse.Namespace) -> int:
    from worker.generate import generate_command

    return generate_command(args)


def _train(args: argparse.Namespace) -> int:
    from model.train import train_command

    return train_command(args)


def _eval(args: argparse.Namespace) -> int:
    from model.evaluate import eval_command

    return eval_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reel", description="Self-hosted text-to-video service.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run everything on this machine (Valkey, a worker, the API)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8000)")
    serve.add_argument("--data-dir", default=None, help="where jobs, videos and Valkey's data live (default ./reel-data)")
    serve.add_argument("--api-key", default=None, help="the default tenant's API key (otherwise one is made and printed)")
    serve.add_argument("--model", default=None, help="reel-shapes-v1, a checkpoint directory, or a preset such as tiny")
    serve.set_defaults(handler=_serve)

    api = commands.add_parser("api", help="run the HTTP API alone (against REEL_REDIS_URL)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.set_defaults(handler=_api)

    worker = commands.add_parser("worker", help="run a Celery worker alone (against REEL_REDIS_URL)")
    worker.add_argument("--queues", default="generate,webhooks,maintenance", help="comma-separated queues to consume")
    worker.add_argument("--concurrency", type=int, default=1, help="generations at once (one per GPU)")
    worker.add_argument("--pool", default="solo", choices=["solo", "prefork", "threads"])
    worker.add_argument("--model", default=None, help="overrides REEL_MODEL")
    worker.set_defaults(handler=_worker)

    keys = commands.add_parser("keys", help="manage API keys and tenants")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key (printed once) for a tenant")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="a label for the key")
    key_commands.add_parser("list", help="list keys (never the secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    keys.set_defaults(handler=_keys)

    generate = commands.add_parser("generate", help="make a video (or a batch of them) on this machine")
    generate.add_argument("prompt", nargs="?", help="what the video shows")
    generate.add_argument("-o", "--output", default="out.mp4", help="output MP4 path")
    generate.add_argument("--batch", default=None, help="a JSONL file of cases: id, prompt, size, seconds, seed, steps, guidance")
    generate.add_argument("--out-dir", default=None, help="where --batch writes <id>.mp4")
    generate.add_argument("--size", default=None, help="WxH, multiples of 16")
    generate.add_argument("--seconds", type=int, default=2, help="0 for a still image")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--steps", type=int, default=None)
    generate.add_argument("--guidance", type=float, default=None)
    generate.add_argument("--negative", default="", help="negative prompt")
    generate.add_argument("--model", default="reel-shapes-v1")
    generate.add_argument("--device", default="cpu")
    generate.set_defaults(handler=_generate)

    train = commands.add_parser("train", help="train the autoencoder or the transformer (resumes from the last checkpoint)")
    train.add_argument("stage", choices=["vae", "dit", "decoder", "export"],
                       help="decoder: fine-tune a finished autoencoder's decoder, its encoder frozen; "
                            "export: write a dit run's newest checkpoint (EMA weights) as a model directory")
    train.add_argument("--preset", default="shapes-s10")
    train.add_argument("--out", required=True, help="run directory (checkpoints, loss log)")
    train.add_argument("--vae", default=None,
                       help="dit, decoder, export: the trained autoencoder's run directory, or a model (reel-shapes-v1)")
    train.add_argument("--init-from", default=None,
                       help="dit stage: start a new run from this model's transformer (a model directory or "
                            "reel-shapes-v1) instead of random weights, to fine-tune it")
    train.add_argument("--relearn-latents", action="store_true",
                       help="with --init-from: the model learned another autoencoder's latents; start from its "
                            "transformer anyway, the layers that read and write latents afresh")
    train.add_argument("--grow-depth", action="store_true",
                       help="with --init-from: the preset's transformer has more blocks than the model's; its "
                            "blocks are spread among them and the new ones start as the identity")
    train.add_argument("--train-only", default=None,
                       help="dit stage: only the parameters whose names start with these prefixes (separated by "
                            "commas, e.g. output_conv.) learn; the rest stay as they start")
    train.add_argument("--shape-shares", default=None,
                       help="dit stage on Shapes: the shares of circles, squares and triangles among the clips "
                            "(three numbers summing to 1, e.g. 0.25,0.5,0.25; default: even)")
    train.add_argument("--denoised-by", default=None,
                       help="decoder stage: learn to draw this model's transformer's estimates of the clean latent "
                            "(what its sampler's last step hands the decoder); its encoder must be --vae's")
    train.add_argument("--data", default="shapes", help="'shapes' or a folder of videos with captions.jsonl")
    train.add_argument("--steps", type=int, default=None, help="total optimiser steps of the run")
    train.add_argument("--to", default=None, help="export: the model directory to write")
    train.add_argument("--sampler", default=None, choices=["euler", "heun"],
                       help="export: the model's default sampler (default: the run's)")
    train.add_argument("--sample-steps", type=int, default=None,
                       help="export: the model's default sampler steps (default: the run's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--token-budget", type=int, default=None, help="tokens (or latent cells) per packed batch")
    train.add_argument("--checkpoint-every", type=int, default=200)
    train.add_argument("--stop-after", type=int, default=None,
                       help="vae, decoder, dit: end this process after N more steps, with a checkpoint "
                            "(the same command, or one with other --steps, continues the run)")
    train.add_argument("--stills-share", type=float, default=None,
                       help="vae stage: the share of the first steps that show still images only (default 0)")
    train.add_argument("--frame-weights", default=None,
                       help="vae, decoder: three numbers adding up to 1, separated by commas: the chances "
                            "of a still, a 9-frame and a 17-frame clip per step (default 0.5,0.3,0.2)")
    train.add_argument("--pool-size", type=int, default=None,
                       help="dit stage: distinct Shapes clips whose latents are encoded once and reused (default 8000)")
    train.add_argument("--device", default="cpu")
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: up to 2)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="measure prompt adherence on the held-out Shapes set")
    evaluate.add_argument("--model", default="reel-shapes-v1")
    evaluate.add_argument("--out", default=None, help="write the report (JSON) and a frame grid here")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases")
    evaluate.add_argument("--steps", type=int, default=None)
    evaluate.add_argument("--sampler", default=None)
    evaluate.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--autoencoder", action="store_true",
                          help="score the autoencoder's round trip of the true renders (the ceiling it sets), not generations")
    evaluate.add_argument("--seen", action="store_true",
                          help="score 48 single-object clips a --seed 0 training run learns from, with its captions, "
                               "instead of the held-out set (has the model learned its data, or only not generalised?)")
    evaluate.add_argument("--words", action="store_true",
                          help="no sampling: how much the denoising loss rises when the prompt names an attribute wrongly, "
                               "per attribute (which words the model heeds), and the loss itself per timestep; "
                               "--limit sets the scenes (default 24)")
    evaluate.set_defaults(handler=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args) or 0


if __name__ == "__main__":
    sys.exit(main())
