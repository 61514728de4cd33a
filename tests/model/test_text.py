"""The frozen MiniLM text encoder: per-token states, mask, "" and the prompt cache."""

import pytest
import torch

from model.config import TextConfig
from model.text import TextEncoder


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(TextConfig(cache_size=2))


def test_per_token_states_and_mask(encoder):
    states, mask = encoder.encode(["a red circle moving left on a white background", "a square"])
    assert states.dtype == torch.float32 and mask.dtype == torch.bool
    assert states.shape[0] == 2 and states.shape[2] == 384
    assert states.shape[1] == mask.shape[1] == int(mask[0].sum())  # padded to the longest prompt
    assert int(mask[1].sum()) == 4  # [CLS] a square [SEP]
    assert torch.equal(states[1, 4:], torch.zeros_like(states[1, 4:]))
    # Distinct tokens have distinct states (not one pooled vector repeated).
    assert (states[0, 1] - states[0, 2]).abs().max() > 0.1


def test_the_empty_prompt_is_the_unconditional_embedding(encoder):
    states, mask = encoder.encode(["", "a blue triangle"])
    assert int(mask[0].sum()) == 2  # [CLS] [SEP]: never an empty row, attention always has a key
    alone, _ = encoder.encode([""])
    assert torch.equal(alone[0], states[0, :2])
    assert (states[0, 0] - states[1, 0]).abs().max() > 0.1


def test_states_do_not_depend_on_batch_neighbours(encoder):
    alone, _ = encoder.encode(["a green square growing"])
    beside, mask = encoder.encode(["a much longer prompt about a yellow circle moving right slowly", "a green square growing"])
    n = alone.shape[1]
    assert torch.equal(beside[1, :n], alone[0])


def test_repeated_prompts_hit_the_lru_cache():
    encoder = TextEncoder(TextConfig(cache_size=2))
    first, _ = encoder.encode(["a red circle"])
    assert (encoder.hits, encoder.misses) == (0, 1)
    again, _ = encoder.encode(["a red circle"])
    assert (encoder.hits, encoder.misses) == (1, 1)
    assert torch.equal(first, again)
    encoder.encode(["a blue square", "a red circle"])  # one miss, one hit
    assert (encoder.hits, encoder.misses) == (2, 2)
    encoder.encode(["a white triangle"])  # evicts the least recently used: "a blue square"
    encoder.encode(["a red circle"])
    assert (encoder.hits, encoder.misses) == (3, 3)
    encoder.encode(["a blue square"])
    assert (encoder.hits, encoder.misses) == (3, 4)


def test_long_prompts_are_truncated_and_the_encoder_is_frozen(encoder):
    states, mask = encoder.encode(["circle " * 200])
    assert states.shape[1] == encoder.config.max_tokens
    assert not any(p.requires_grad for p in encoder.model.parameters())
    with pytest.raises(TypeError):
        encoder.encode("a single string")
