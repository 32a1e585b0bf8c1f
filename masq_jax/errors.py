"""One root for every error a user can fix: ``MasqError``, each with one line saying what is wrong
and what to do.

The CLI catches ``MasqError`` (and nothing broader): it prints ``str(error)`` alone and exits with
status 2. Anything else that escapes is a bug and keeps its traceback. The model loaders
(``masq_jax.models.errors``) and the calibration front end (``masq_jax.calib.errors``) derive their
errors from this root too.
"""

from __future__ import annotations


class MasqError(ValueError):
    """Bad input or state the user can fix (one-line message)."""


class SettingsError(MasqError):
    """An option outside its accepted values."""


class CheckpointError(MasqError):
    """A resume checkpoint that is missing, corrupt or from a different run."""


class OutputDirError(MasqError):
    """The output directory already holds something we must not overwrite, or cannot be written."""


class ArtifactError(MasqError):
    """A directory that is not a complete, readable masq-jax artefact."""


class CoreInputError(MasqError):
    """An array of the wrong rank/shape, or an argument outside its accepted values, given to a pure
    function of ``masq_jax.core`` (raised at trace time: shapes are static)."""


class QuantConfigError(MasqError):
    """A quantizer argument (bits, group size, bound) outside its accepted values."""


class KernelConfigError(MasqError):
    """A kernel argument (implementation, config, shapes, quantization setting) it cannot handle."""


class MasqWarning(UserWarning):
    """A condition the user should see but that does not stop the run (an already-quantized source,
    a modality left without tokens, evaluation on the calibration set). Library code raises it with
    ``warnings.warn(message, MasqWarning)``; the CLI prints each as one ``masq: warning: ...`` line."""
