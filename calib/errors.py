"""Error classes of the calibration front end: one-line messages, rooted at ``masq_jax.errors.MasqError``.

The CLI turns any ``CalibError`` into one line and exit status 2; the messages name the file, the
manifest line or the sample index at fault and what to do about it.
"""

from __future__ import annotations

from masq_jax.errors import MasqError


class CalibError(MasqError):
    """Base class of every calibration-data error."""


class CalibFormatError(CalibError):
    """A CalibSet file (.npz) or in-memory arrays with missing keys, bad shapes or bad dtypes."""


class NonFiniteError(CalibError):
    """NaN or Inf in calibration embeddings (stored or produced by an encoder); names the sample."""


class ManifestError(CalibError):
    """A malformed JSONL manifest line, or a file it names that is missing or unreadable."""


class MissingModalityError(CalibError):
    """The method needs a modality (e.g. vision statistics) that the calibration set lacks."""


class CalibSourceError(CalibError):
    """An unknown calibration source string, a bad option, or a source that cannot be built."""


class TokenizerError(CalibError):
    """A tokenizer that cannot be loaded or used."""


class CacheError(CalibError):
    """A cache entry that cannot be written (a broken entry on read is rebuilt with a warning)."""
