"""omni-SmolLM2's front end: a prompt (question + images + clips) in SmolLM2's chat template with the
media placeholders opening the user turn, the trained encoders' outputs in place of the
placeholders, Thinker positions; SmolLM2's tokenizer decodes the answer (up to ``<|im_end|>``).

Images: a 32 x 128 array in [0, 1] (``.npy``) or a 32 x 128 grayscale ``.png``; audio: a 16 kHz
waveform (``.npy``) or a ``.wav`` (resampled to 16 kHz), cut or padded to 4 s by the log-mel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from masq_jax.calib.sample import CalibSample, make_sample
from masq_jax.families.omni_smollm2 import model as M
from masq_jax.families.omni_smollm2 import chat as P
from masq_jax.families import media_files
from masq_jax.families.omni_smollm2.checkpoint import ENCODERS, load_encoders
from masq_jax.errors import MasqError


def read_image(path: Path) -> np.ndarray:
    """[32, 128] float32 in [0, 1] from ``.npy`` or a grayscale ``.png``."""
    return media_files.read_image(path, (M.HEIGHT, M.WIDTH), "omni-SmolLM2")


def read_audio(path: Path) -> np.ndarray:
    """A 16 kHz float32 waveform from ``.npy`` or ``.wav``."""
    return media_files.read_audio(path, M.SAMPLE_RATE)


class OmniSmolLM2FrontEnd:
    """Prompt + images + audio -> SmolLM2 inputs with the encoders of the checkpoint at ``ckpt``."""

    modalities = ("text", "vision", "audio")

    def __init__(self, ckpt: str | Path):
        from masq_jax.families.omni_smollm2.checkpoint import load_checkpoint_dir

        self.cfg, params = load_checkpoint_dir(ckpt)
        self.embed_table = params["embed"]
        self.enc = load_encoders(Path(ckpt) / ENCODERS, self.cfg.hidden_size)
        self.eos_ids = (P.IM_END,)

    def encode(self, text: str, images: Sequence = (), audios: Sequence = (), videos: Sequence = ()) -> CalibSample:
        if videos:
            raise MasqError("omni-SmolLM2 takes no video")
        ids = np.asarray(P.chat_prompt_ids(text, len(images), len(audios)), np.int32)
        row = jnp.asarray(ids)[None]
        emb = jnp.take(self.embed_table, row, axis=0)
        if images:
            vis = jnp.concatenate([M.encode_vision(self.enc, jnp.asarray(M.image_patches(read_image(Path(p))))[None])
                                   for p in images], axis=1)
            emb = M.scatter(emb, row, M.TOKENS["image_token_id"], vis)
        if audios:
            aud = jnp.concatenate([M.encode_audio(self.enc, jnp.asarray(M.log_mel(read_audio(Path(p))))[None])
                                   for p in audios], axis=1)
            emb = M.scatter(emb, row, M.TOKENS["audio_token_id"], aud)
        pos = M.positions(self.cfg, ids[None])[:, 0]
        return make_sample(M.modality_ids(ids), pos, inputs_embeds=np.asarray(emb[0], np.float32))

    def decode(self, tokens: Sequence[int]) -> str:
        from masq_jax.families.frontends import until_eos as _until_eos

        return P.tokenizer().decode(_until_eos(tokens, self.eos_ids), skip_special_tokens=True).strip()
