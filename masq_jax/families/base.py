"""The ModelFamily protocol: one kind of model source (an HF directory, a GGUF file, an artefact, a
random toy decoder, a trained demo checkpoint) and everything the quantizer asks of it.

A family:

* ``recognise(spec)``: whether a ``--model`` spec is one of its models (the registry asks each
  family in turn, first match wins);
* ``resolve(spec)``: the spec checked and made canonical (the embedded default's path, a toy name
  validated), or one clear ``MasqError``;
* ``source(spec)``: the string an artefact records as its ``source_model`` (an absolute path);
* ``load(spec, dtype, stream)``: ``(DecoderConfig, params)`` of its full-precision decoder
  (``stream`` leaves the layers on disk where the format allows);
* ``config(spec)``: its ``DecoderConfig`` read from headers alone (config.json, the GGUF metadata),
  without the weights, so that options are checked before anything large loads; None when unknown;
* ``load_model(spec, ...)``: the callable model ``masq_jax.load`` returns (FP: ``models.Model`` on an
  optional mesh);
* ``reference(spec)``: another spec whose front end and weights stand for this one (an artefact's
  source model), or None;
* ``frontend(spec)``: prompt + media -> inputs, tokens -> text (``masq_jax.frontend``).

Add a family: subclass ``ModelFamily`` in a module of this package and list it in ``registry.py``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import jax.numpy as jnp

from masq_jax.errors import MasqError


class ModelFamily:
    """One kind of model source (see the module docstring). Instances are stateless singletons."""

    name: ClassVar[str]
    summary: ClassVar[str]
    archs: ClassVar[tuple[str, ...]] = ()  # the decoder architectures it yields (models.config.ARCHS)

    def recognise(self, spec: str | None) -> bool:
        raise NotImplementedError

    def resolve(self, spec: str) -> str:
        return spec

    def source(self, spec: str) -> str:
        return os.path.abspath(spec)

    def config(self, spec: str):
        """The ``DecoderConfig`` from config.json or the GGUF header (no weights read), or None."""
        from masq_jax.models.config import config_from_hf

        if os.path.isfile(spec) and spec.endswith(".gguf"):
            import gguf

            from masq_jax.models.gguf_loader import gguf_hf_config

            try:
                reader = gguf.GGUFReader(spec)  # memory-mapped: the header only is read
            except (ValueError, OSError):
                return None  # the loader reports an unreadable file in its own words
            return config_from_hf(gguf_hf_config(reader))
        hf = read_json(spec) if os.path.isdir(spec) else None
        return None if hf is None else config_from_hf(hf)

    def load(self, spec: str, dtype: Any = jnp.float32, stream: bool = False):
        """A checkpoint ``masq_jax.models`` reads (HF directory or .gguf; quantized ones refused)."""
        from masq_jax.models import load_params

        return load_params(spec, dtype, stream=stream)

    def load_model(self, spec: str, dtype: Any = None, *, implementation: str | None = "xla", mesh=None,
                   merge: bool | None = None):
        from masq_jax import parallel
        from masq_jax.models import Model

        del merge  # a full-precision model has no merged layout
        cfg, params = self.load(spec, jnp.float32 if dtype is None else dtype)
        return Model(cfg, parallel.shard_params(params, parallel.make_mesh(mesh)))

    def reference(self, spec: str) -> str | None:
        return None

    def frontend(self, spec: str):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<model family {self.name}>"


def read_json(path: str | os.PathLike) -> dict | None:
    """A directory's config.json as a dict, or None (no such file, unreadable, not an object)."""
    import json

    p = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(p):
        return None
    try:
        with open(p) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


class CheckpointDirFamily(ModelFamily):
    """A checkpoint directory that says what it is: its config.json has a ``config_key`` block."""

    config_key: ClassVar[str]

    def recognise(self, spec):
        cfg = read_json(spec) if spec else None
        return cfg is not None and isinstance(cfg.get(self.config_key), dict)
