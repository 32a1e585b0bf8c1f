"""A masq-jax artefact directory (``masq quantize``'s output) as a model source: it loads as a
``QuantizedModel``; its front end and full-precision reference are those of its source model,
read from its metadata (``artifact.info``). When the source has moved or gone, the front end is
built from the tokenizer files the artefact carries (``artifact.support``; text prompts)."""

from __future__ import annotations

from masq_jax.artifact.info import is_artifact, read_info
from masq_jax.errors import MasqError
from masq_jax.families.base import ModelFamily


class Artifact(ModelFamily):
    name = "artifact"
    summary = "a masq-jax artefact directory (quantized; its front end is its source model's)"

    def recognise(self, spec):
        return spec is not None and is_artifact(spec)

    def load_model(self, spec, dtype=None, *, implementation="xla", mesh=None, merge=None):
        from masq_jax.artifact.format import read_artifact

        return read_artifact(spec, dtype, implementation=implementation, mesh=mesh, merge=merge)

    def reference(self, spec):
        source = read_info(spec).source_model
        if not source:
            raise MasqError(f"{spec}: the artefact does not name its source model; pass --reference")
        if not _present(source):
            raise MasqError(f"{spec}: its source model {source} is not there (moved or deleted); pass --reference "
                            "with the full-precision model")
        return source

    def frontend(self, spec):
        """None (the source model's, through ``reference``) while the source is there; else a text
        front end from the tokenizer the artefact carries."""
        from masq_jax.artifact.support import has_tokenizer

        source = read_info(spec).source_model
        if source and _present(source):
            return None
        if has_tokenizer(spec):
            from masq_jax.families.frontends import TextFrontEnd

            return TextFrontEnd(spec)
        if not source:
            return None  # ``reference`` says the artefact names no source
        raise MasqError(f"{spec}: its source model {source} is not here and the artefact carries "
                        "no tokenizer (made before artefacts were self-contained); re-run masq quantize, or put the "
                        "source back at that path")


def _present(source: str) -> bool:
    """Whether a recorded source model can still be loaded (a model family recognises it)."""
    from masq_jax.families import find

    try:
        find(source)
    except MasqError:
        return False
    return True
