"""`reel generate`: make a video (or a batch of them) on this machine, without the service.

One prompt goes to `-o out.mp4`; `--batch cases.jsonl --out-dir DIR` reads JSON lines
(`id`, `prompt`, and optionally `size`, `seconds`, `seed`, `steps`, `guidance`,
`negative_prompt`) and writes `DIR/<id>.mp4`, packing several cases into each
pipeline call (requests of different sizes share one forward pass).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

# Cases of one pipeline call: enough to fill a forward pass, few enough to keep memory bounded.
BATCH_SIZE = 8
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CASE_FIELDS = {"id", "prompt", "size", "seconds", "seed", "steps", "guidance", "negative_prompt", "negative"}


class InputError(ValueError):
    """Bad input from the command line or the batch file; the message says what and where."""


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    prompt: str
    negative_prompt: str
    width: int | None  # None: the model's first training size, filled in once it is loaded
    height: int | None
    seconds: int
    seed: int
    steps: int | None
    guidance: float | None
    output: Path


def parse_size(value, where: str) -> tuple[int, int]:
    """'WxH' (multiples of 16, at least 32) as (width, height); the model's upper bound is checked once it is loaded."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(value))
    if not match:
        raise InputError(f"{where}: size must look like WxH (e.g. 64x64), got {value!r}")
    width, height = int(match.group(1)), int(match.group(2))
    for name, side in (("width", width), ("height", height)):
        if side % 16 or side < 32:
            raise InputError(f"{where}: {name} must be a multiple of 16, at least 32, got {side}")
    return width, height


def _integer(value, name: str, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise InputError(f"{where}: {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InputError(f"{where}: {name} must be {bounds}, got {value}")
    return value


def _number(value, name: str, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{where}: {name} must be between {low} and {high}, got {value}")
    return float(value)


def make_case(fields: dict, defaults: argparse.Namespace, output: Path, where: str) -> Case:
    """One case from its fields, the command line's values standing in for missing ones."""
    unknown = set(fields) - CASE_FIELDS
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{where}: prompt must be a non-empty string")
    size = fields.get("size", defaults.size)
    width, height = parse_size(size, where) if size is not None else (None, None)
    steps = fields.get("steps", defaults.steps)
    guidance = fields.get("guidance", defaults.guidance)
    negative = fields.get("negative_prompt", fields.get("negative", defaults.negative)) or ""
    if not isinstance(negative, str):
        raise InputError(f"{where}: negative_prompt must be a string")
    return Case(
        id=str(fields.get("id", "")),
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        seconds=_integer(fields.get("seconds", defaults.seconds), "seconds", where, 0),
        seed=_integer(fields.get("seed", defaults.seed), "seed", where, 0, 2**63 - 1),
        steps=None if steps is None else _integer(steps, "steps", where, 1, 1000),
        guidance=None if guidance is None else _number(guidance, "guidance", where, 0.0, 100.0),
        output=output,
    )


def read_batch(path: Path, out_dir: Path, defaults: argparse.Namespace) -> list[Case]:
    if not path.is_file():
        raise InputError(f"--batch: no such file {str(path)!r}")
    cases, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(fields, dict):
            raise InputError(f"{where}: each line must be a JSON object")
        case_id = fields.get("id")
        if not isinstance(case_id, (str, int)) or isinstance(case_id, bool) or not CASE_ID.match(str(case_id)):
            raise InputError(f"{where}: id must be a short name of letters, digits, '.', '_' or '-', got {case_id!r}")
        if str(case_id) in seen:
            raise InputError(f"{where}: id {case_id!r} appears twice")
        seen.add(str(case_id))
        cases.append(make_case(fields, defaults, out_dir / f"{case_id}.mp4", where))
    if not cases:
        raise InputError(f"--batch: {str(path)!r} holds no cases")
    return cases


def case_places(args: argparse.Namespace, cases: list[Case]) -> list[str]:
    return [f"case {case.id!r}" for case in cases] if args.batch else ["arguments"]


def fit_to_model(case: Case, config, where: str) -> Case:
    """The case within what the loaded model makes: its default size, its largest side and duration."""
    if case.width is None:
        width, height = config.sizes[0]
        case = dataclasses.replace(case, width=width, height=height)
    for name, side in (("width", case.width), ("height", case.height)):
        if side > config.max_side:
            raise InputError(f"{where}: {name} must be at most {config.max_side} for this model, got {side}")
    longest = max(config.seconds)
    if case.seconds > longest:
        raise InputError(f"{where}: seconds must be at most {longest} for this model, got {case.seconds}")
    return case


def batches(cases: list[Case], size: int = BATCH_SIZE) -> list[list[Case]]:
    """Cases grouped for one pipeline call each: one sampler schedule per call, so steps must match."""
    groups: dict[int | None, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.steps, []).append(case)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


class ProgressBar:
    """Sampler steps across all pipeline calls, on stderr (tqdm when it is installed)."""

    def __init__(self, total: int, description: str):
        self.total, self.done, self.description = total, 0, description
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, unit="step", file=sys.stderr)
        except ImportError:
            self._bar = None

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
            return
        filled = int(30 * self.done / max(self.total, 1))
        sys.stderr.write(f"\r{self.description} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} steps")
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")


def generate_command(args: argparse.Namespace) -> int:
    try:
        return _generate(args)
    except InputError as error:
        print(f"reel generate: error: {error}", file=sys.stderr)
        return 2


def _generate(args: argparse.Namespace) -> int:
    if args.batch and args.prompt:
        raise InputError("give either a prompt or --batch, not both")
    if not args.batch and not (args.prompt and args.prompt.strip()):
        raise InputError("a prompt is required (or --batch cases.jsonl --out-dir DIR)")
    if args.batch and not args.out_dir:
        raise InputError("--batch needs --out-dir")

    # Everything that can be checked without the model is checked before it loads.
    if args.batch:
        out_dir = Path(args.out_dir)
        cases = read_batch(Path(args.batch), out_dir, args)
    else:
        output = Path(args.output)
        if not output.parent.is_dir():
            raise InputError(f"-o: directory {str(output.parent)!r} does not exist")
        cases = [make_case({"prompt": args.prompt}, args, output, "arguments")]

    from model import TextToVideo, VideoSpec

    from worker.media import write_mp4

    try:
        pipeline = TextToVideo.load(args.model, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        raise InputError(f"--model: cannot load {args.model!r}: {error}") from None
    config = pipeline.config
    cases = [fit_to_model(case, config, where) for case, where in zip(cases, case_places(args, cases))]
    if args.batch:
        out_dir.mkdir(parents=True, exist_ok=True)

    groups = batches(cases)
    total_steps = sum(group[0].steps or config.flow.steps for group in groups)
    bar = ProgressBar(total_steps, "generating")
    try:
        for group in groups:
            specs = [
                VideoSpec(
                    prompt=case.prompt,
                    negative_prompt=case.negative_prompt,
                    width=case.width,
                    height=case.height,
                    frames=1 + config.fps * case.seconds,
                    seed=case.seed,
                    steps=case.steps,
                    guidance=case.guidance,
                )
                for case in group
            ]
            try:
                videos = pipeline.generate(specs, on_step=lambda step, steps: bar.advance())
            except ValueError as error:
                raise InputError(str(error)) from None
            for case, frames in zip(group, videos):
                write_mp4(frames, case.output, fps=config.fps)
    finally:
        bar.close()
    for case in cases:
        print(case.output)
    return 0
