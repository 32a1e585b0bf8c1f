"""masq_jax.calib: calibration data for MASQuant (what enters the decoder, per sample).

Front door: ``load_calib(source, ...) -> CalibSet``. A CalibSet holds, per sample, token ids or
input embeddings, RoPE positions ([3, S] multimodal or [S]) and modality ids (0 text, 1 vision,
2 audio), pads them into a few static shapes (``CalibSet.batches``) and saves to / loads from one
``.npz``. Sources: text (tokenizer + text), a multimodal JSONL manifest run through the checkpoint's
HF processor and PyTorch encoders (``masq_jax.calib.multimodal``, needs the ``hf`` extra) and
synthetic streams.
"""

from masq_jax.modality import AUDIO, TEXT, VISION
from masq_jax.modality import IDS as MODALITY_IDS
from masq_jax.modality import NAMES as MODALITY_NAMES

from .calibset import CalibSet, arrays_to_calibset, load_npz, require_modalities
from .errors import (
    CacheError,
    CalibError,
    CalibFormatError,
    CalibSourceError,
    ManifestError,
    MissingModalityError,
    NonFiniteError,
    TokenizerError,
)
from .io import save_npz
from .load import SOURCE_FORMS, load_calib
from .manifest import ManifestEntry, read_manifest
from .multimodal import HFFrontEnd, manifest_calibset
from .sample import CalibSample, make_sample
from .synthetic import SyntheticSpec, synthetic_calibset
from .text import default_corpus, load_tokenizer, smollm2_gguf_path, text_calibset

__all__ = [
    "AUDIO", "MODALITY_IDS", "MODALITY_NAMES", "TEXT", "VISION",
    "CalibSample", "CalibSet", "make_sample", "require_modalities",
    "CacheError", "CalibError", "CalibFormatError", "CalibSourceError", "ManifestError",
    "MissingModalityError", "NonFiniteError", "TokenizerError",
    "arrays_to_calibset", "load_npz", "save_npz",
    "SOURCE_FORMS", "load_calib",
    "ManifestEntry", "read_manifest", "HFFrontEnd", "manifest_calibset",
    "SyntheticSpec", "synthetic_calibset",
    "default_corpus", "load_tokenizer", "smollm2_gguf_path", "text_calibset",
]
