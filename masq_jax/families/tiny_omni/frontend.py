"""The tiny omni model's front end: its word vocabulary, its encoders and its prompt layout
(``<bos>``, then per image ``<vision_bos> <image>x16 <vision_eos>``, per audio ``<audio_bos>
<audio>x16 <audio_eos>``, then the words), as ``masq_jax.frontend`` defines a front end.

Images: a 32x32 array in [0, 1] (``.npy``) or a 32x32 grayscale ``.png``; audio: a 1 s 8 kHz
waveform (``.npy``) or a ``.wav`` (resampled to 8 kHz).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from masq_jax.calib.sample import CalibSample, make_sample
from masq_jax.families import media_files
from masq_jax.families.tiny_omni import features as D
from masq_jax.families.tiny_omni import model as M
from masq_jax.errors import MasqError

IMAGE_TOKENS = ["<vision_bos>"] + ["<image>"] * D.N_VISION + ["<vision_eos>"]
AUDIO_TOKENS = ["<audio_bos>"] + ["<audio>"] * D.N_AUDIO + ["<audio_eos>"]


def read_image(path: Path) -> np.ndarray:
    """[32, 32] float32 in [0, 1] from ``.npy`` or a grayscale ``.png``."""
    return media_files.read_image(path, (D.IMG, D.IMG), "the tiny omni model")


def read_audio(path: Path) -> np.ndarray:
    """[8000] float32 waveform (1 s at 8 kHz) from ``.npy`` or ``.wav``."""
    wave = media_files.read_audio(path, D.SR)
    return np.pad(wave, (0, max(0, D.SR - wave.size)))[: D.SR]


class TinyOmniFrontEnd:
    """Prompt words + images + audio -> decoder inputs of the tiny omni checkpoint at ``ckpt``."""

    modalities = ("text", "vision", "audio")

    def __init__(self, ckpt: str | Path):
        from masq_jax.models import load_params

        self.cfg, params = load_params(str(ckpt))
        self.embed_table = params["embed"]
        _, self.enc, sink = M.load_encoders(str(ckpt))
        self.sink = jnp.asarray(sink)
        self.eos_ids = (D.TOK["<eos>"],)

    def tokens(self, text: str, n_images: int, n_audios: int) -> list[int]:
        words = text.split()
        unknown = [w for w in words if w not in D.TOK]
        if unknown:
            raise MasqError(f"{unknown[0]!r} is not a tiny omni word; its vocabulary is {' '.join(D.WORDS)}")
        return [D.TOK[t] for t in ["<bos>", *IMAGE_TOKENS * n_images, *AUDIO_TOKENS * n_audios, *words]]

    def encode(self, text: str, images: Sequence = (), audios: Sequence = (), videos: Sequence = ()) -> CalibSample:
        if videos:
            raise MasqError("the tiny omni model takes no video")
        ids = np.asarray(self.tokens(text, len(images), len(audios)), np.int32)
        row = jnp.asarray(ids)[None]
        emb = jnp.take(self.embed_table, row, axis=0)
        if images:  # each image through the encoder on its own (it sees one image's 16 tokens)
            vis = jnp.concatenate([M.encode(self.enc["vision"], jnp.asarray(D.image_patches(read_image(Path(p))))[None],
                                            "vision") for p in images], axis=1) + self.sink
            emb = M.scatter_placeholders(emb, row, D.TOK["<image>"], vis)
        if audios:
            aud = jnp.concatenate([M.encode(self.enc["audio"], jnp.asarray(D.audio_tokens_features(
                D.log_mel(read_audio(Path(p)))))[None], "audio") for p in audios], axis=1)
            emb = M.scatter_placeholders(emb, row, D.TOK["<audio>"], aud)
        pos = M.positions(self.cfg, ids[None])[:, 0]
        return make_sample(M.modality_ids(ids), pos, inputs_embeds=np.asarray(emb[0], np.float32))

    def decode(self, tokens: Sequence[int]) -> str:
        words = []
        for t in tokens:
            if int(t) in self.eos_ids:
                break
            words.append(D.VOCAB[int(t)] if int(t) < len(D.VOCAB) else "<unk>")
        return " ".join(words)

