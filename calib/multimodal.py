"""The real multimodal front end: a JSONL manifest -> the checkpoint's own HF processor and PyTorch
encoders -> exactly the decoder inputs the PyTorch model builds (Qwen2.5-Omni Thinker, Qwen2.5-VL).

How: the checkpoint is loaded with transformers' own class and loader, with the text decoder cut to
zero layers (its weights are skipped, so a 7B checkpoint costs only its encoders and embeddings in
memory). Each sample goes through the processor and the model's own ``forward``; a pre-hook on the
language model captures ``inputs_embeds`` (placeholder embeddings replaced by encoder outputs by the
model's own code) and ``position_ids`` (the model's own ``get_rope_index``), then stops the forward.
Modality ids come from the placeholder token ids in the config (docs/method.md §0: only image/audio
placeholders are vision/audio; delimiters and the chat template are text; video placeholders are text
unless ``video_as_vision``). Needs the ``hf`` extra (torch, torchvision, pillow).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from masq_jax.modality import AUDIO, NAMES, TEXT, VISION
from masq_jax.models.config import MODEL_TYPES, MULTIMODAL_MODEL_TYPES

from .calibset import CalibSet
from .sample import CalibSample
from .errors import CalibSourceError, ManifestError, NonFiniteError
from .manifest import ManifestEntry, read_manifest

SUPPORTED_MODEL_TYPES = MULTIMODAL_MODEL_TYPES  # HF model_types with a processor and encoders
DTYPES = ("float32", "bfloat16", "float16")


class _Captured(Exception):
    """Raised by the language-model pre-hook to stop the forward once its inputs are captured."""


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0]}" if s else type(e).__name__


class HFFrontEnd:
    """Processor + encoders of one checkpoint, loaded once; ``__call__(entry)`` -> one CalibSample."""

    def __init__(self, model_dir: str | os.PathLike, dtype: str = "float32", video_as_vision: bool = False,
                 use_chat_template: bool | None = None, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model_dir = Path(model_dir)
        if dtype not in DTYPES:
            raise CalibSourceError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        cfg_path = self.model_dir / "config.json"
        if not cfg_path.is_file():
            raise CalibSourceError(f"{self.model_dir}: no config.json (a multimodal manifest needs an HF checkpoint folder)")
        try:
            raw = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CalibSourceError(f"{cfg_path}: unreadable config ({e})") from None
        self.model_type = raw.get("model_type")
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise CalibSourceError(
                f"{cfg_path}: model_type {self.model_type!r} has no multimodal front end here; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)} (use a text or .npz source instead)"
            )
        try:
            import torch
            import transformers
        except ImportError as e:
            raise CalibSourceError(f"the multimodal front end needs torch and transformers ({e}); pip install 'masq-jax[hf]'") from None
        self.torch = torch
        self.dtype = dtype
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise CalibSourceError(f"device {device!r} is not a torch device ({e})") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise CalibSourceError("device='cuda' but torch sees no CUDA GPU; use device='cpu'")
        self.video_as_vision = video_as_vision
        self.use_chat_template = use_chat_template
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(str(self.model_dir))
        except Exception as e:
            raise CalibSourceError(f"{self.model_dir}: cannot load the HF processor ({_one_line(e)})") from None
        self._load_model(transformers, torch)
        self._resolve_tokens()

    # ---- model -------------------------------------------------------------------------------
    def _load_model(self, transformers, torch) -> None:
        d = str(self.model_dir)
        kwargs: dict[str, Any] = {}
        if MODEL_TYPES[self.model_type] == "qwen2_5_omni_thinker":
            cls = transformers.Qwen2_5OmniThinkerForConditionalGeneration
            if self.model_type == "qwen2_5_omni":  # full Omni checkpoint: take its Thinker
                config = transformers.Qwen2_5OmniConfig.from_pretrained(d).thinker_config
                kwargs["key_mapping"] = {r"^thinker\.": ""}
            else:
                config = transformers.Qwen2_5OmniThinkerConfig.from_pretrained(d)
        else:
            cls = transformers.Qwen2_5_VLForConditionalGeneration
            config = transformers.Qwen2_5_VLConfig.from_pretrained(d)
        text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config.text_config
        self.num_layers_full = int(text_cfg.num_hidden_layers)
        # Cut the decoder to zero layers: only encoders, embeddings (and norm/head) are loaded.
        for c in {id(text_cfg): text_cfg, id(config): config}.values():
            if hasattr(c, "num_hidden_layers"):
                c.num_hidden_layers = 0
            if getattr(c, "layer_types", None) is not None:
                c.layer_types = []
        self.config = config
        tdtype = getattr(torch, self.dtype)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from transformers.utils import logging as hf_logging

                verbosity = hf_logging.get_verbosity()
                hf_logging.set_verbosity_error()
                try:
                    model, info = cls.from_pretrained(d, config=config, dtype=tdtype, output_loading_info=True, **kwargs)
                finally:
                    hf_logging.set_verbosity(verbosity)
        except Exception as e:
            raise CalibSourceError(f"{self.model_dir}: cannot load the encoders ({_one_line(e)})") from None
        needed = ("visual.", "audio_tower.", "embed_tokens.")
        missing = [k for k in info.get("missing_keys", []) if any(n in k for n in needed)]
        if missing:
            raise CalibSourceError(
                f"{self.model_dir}: encoder weights missing from the checkpoint ({len(missing)} tensors, e.g. {missing[0]}); "
                "is this the right checkpoint?"
            )
        model.lm_head = None  # never used: the forward stops at the language model's input
        self.model = model.eval().to(self.device)
        inner = model.model
        self.inner = inner
        self.language_model = inner.language_model
        self.language_model.register_forward_pre_hook(self._hook, with_kwargs=True)
        self._captured: dict[str, Any] = {}

    def _hook(self, module, args, kwargs):
        self._captured = {"inputs_embeds": kwargs.get("inputs_embeds"), "position_ids": kwargs.get("position_ids")}
        raise _Captured

    def _resolve_tokens(self) -> None:
        cfg = self.config
        tok = self.processor.tokenizer

        def cid(*names):
            for n in names:
                v = getattr(cfg, n, None)
                if v is not None:
                    return int(v)
            return None

        self.image_token_id = cid("image_token_id", "image_token_index")
        self.video_token_id = cid("video_token_id", "video_token_index")
        self.audio_token_id = cid("audio_token_id", "audio_token_index")
        if self.image_token_id is None:
            raise CalibSourceError(f"{self.model_dir}: config has no image_token_id")
        # Standalone Omni Thinker configs may lack the vision start/end ids get_rope_index needs.
        if MODEL_TYPES[self.model_type] != "qwen2_5_vl" and getattr(cfg, "vision_start_token_id", None) is None:
            vb = getattr(tok, "vision_bos_token", None)
            if vb is None:
                raise CalibSourceError(f"{self.model_dir}: neither the config nor the tokenizer names the vision start token")
            cfg.vision_start_token_id = tok.convert_tokens_to_ids(vb)
        self.vision_start_token_id = cid("vision_start_token_id")
        self.vision_end_token_id = cid("vision_end_token_id")
        self.audio_start_token_id = cid("audio_start_token_id")
        self.audio_end_token_id = cid("audio_end_token_id")
        if self.vision_end_token_id is None and getattr(tok, "vision_eos_token", None):
            self.vision_end_token_id = tok.convert_tokens_to_ids(tok.vision_eos_token)
        proc = self.processor
        self.image_token = getattr(proc, "image_token", None) or tok.convert_ids_to_tokens(self.image_token_id)
        self.video_token = getattr(proc, "video_token", None)
        self.audio_token = getattr(proc, "audio_token", None)
        conv = tok.convert_ids_to_tokens
        self.vision_bos = conv(self.vision_start_token_id) if self.vision_start_token_id is not None else ""
        self.vision_eos = conv(self.vision_end_token_id) if self.vision_end_token_id is not None else ""
        self.audio_bos = conv(self.audio_start_token_id) if self.audio_start_token_id is not None else ""
        self.audio_eos = conv(self.audio_end_token_id) if self.audio_end_token_id is not None else ""
        fe = getattr(proc, "feature_extractor", None)
        self.sampling_rate = int(getattr(fe, "sampling_rate", 16000)) if fe is not None else None

    def settings(self) -> dict[str, Any]:
        """What the outputs depend on besides files (part of the cache key)."""
        import transformers

        return {"dtype": self.dtype, "device": str(self.device), "video_as_vision": self.video_as_vision,
                "use_chat_template": self.use_chat_template, "transformers": transformers.__version__,
                "torch": self.torch.__version__}

    # ---- prompt ------------------------------------------------------------------------------
    def prompt(self, e: ManifestEntry, where: str) -> str:
        """The text given to the processor: verbatim if it holds placeholders, else templated."""
        marks = {"images": self.image_token, "audios": self.audio_token, "videos": self.video_token}
        if any(m and m in e.text for m in marks.values()):
            for key, mark in marks.items():
                n = e.text.count(mark) if mark else 0
                if n != len(getattr(e, key)):
                    raise ManifestError(
                        f"{where}: text has {n} {mark} placeholder(s) but {len(getattr(e, key))} {key} are listed"
                    )
            return e.text + (e.answer or "")
        if e.audios and not self.audio_token:
            raise ManifestError(f"{where}: this model ({self.model_type}) takes no audio")
        if e.videos and not self.video_token:
            raise ManifestError(f"{where}: this model's processor takes no video")
        template = getattr(self.processor, "chat_template", None)
        if self.use_chat_template is not False and template:
            content = ([{"type": "image"}] * len(e.images) + [{"type": "audio"}] * len(e.audios)
                       + [{"type": "video"}] * len(e.videos) + [{"type": "text", "text": e.text}])
            conv = [{"role": "user", "content": content}]
            if e.answer is not None:
                conv.append({"role": "assistant", "content": [{"type": "text", "text": e.answer}]})
            try:
                return self.processor.apply_chat_template(conv, tokenize=False, add_generation_prompt=e.answer is None)
            except Exception as ex:
                raise ManifestError(f"{where}: the processor's chat template failed ({_one_line(ex)})") from None
        if self.use_chat_template is True:
            raise CalibSourceError(f"{self.model_dir}: use_chat_template=True but the processor has no chat template")
        parts = [self.vision_bos + self.image_token + self.vision_eos for _ in e.images]
        parts += [self.audio_bos + self.audio_token + self.audio_eos for _ in e.audios]
        parts += [self.vision_bos + self.video_token + self.vision_eos for _ in e.videos]
        text = "".join(parts) + e.text
        return text + (" " + e.answer if e.answer else "")

    # ---- one sample --------------------------------------------------------------------------
    def processor_inputs(self, e: ManifestEntry, where: str) -> dict[str, Any]:
        from .media import load_audio, load_image, load_video_frames

        kw: dict[str, Any] = {"text": [self.prompt(e, where)], "return_tensors": "pt"}
        if e.images:
            kw["images"] = [load_image(p, where) for p in e.images]
        if e.audios:
            kw["audio"] = [load_audio(p, where, self.sampling_rate) for p in e.audios]
            limit = getattr(getattr(self.processor, "feature_extractor", None), "n_samples", None)
            for p, a in zip(e.audios, kw["audio"]):
                if limit and len(a) > limit:
                    warnings.warn(f"{where}: {p} is {len(a) / self.sampling_rate:.1f} s long; the HF processor keeps "
                                  f"only the first {limit / self.sampling_rate:.0f} s (as the model would)", stacklevel=2)
        if e.videos:
            kw["videos"] = [load_video_frames(p, where) for p in e.videos]
        try:
            return dict(self.processor(**kw))
        except Exception as ex:
            raise ManifestError(f"{where}: the HF processor rejected this sample ({_one_line(ex)})") from None

    def __call__(self, e: ManifestEntry, where: str, index: int) -> CalibSample:
        torch = self.torch
        inputs = self.processor_inputs(e, where)
        ids = inputs["input_ids"]
        self._captured = {}
        fdt = getattr(torch, self.dtype)
        for k, v in inputs.items():
            if torch.is_tensor(v):
                inputs[k] = v.to(self.device, fdt if k in ("pixel_values", "pixel_values_videos", "input_features")
                                 and v.is_floating_point() else None)
        if hasattr(self.inner, "rope_deltas"):
            self.inner.rope_deltas = None  # no state carried from the previous sample
        try:
            with torch.no_grad():
                self.inner(**inputs, use_cache=False)
        except _Captured:
            pass
        except Exception as ex:
            raise CalibSourceError(f"{where}: the encoders failed on this sample ({_one_line(ex)})") from None
        if "inputs_embeds" not in self._captured:
            raise CalibSourceError(f"{where}: the model never reached its language model (unexpected model class)")
        emb = self._captured["inputs_embeds"][0].detach().float().cpu().numpy()
        s = emb.shape[0]
        pos = self._captured["position_ids"]
        # What the text model itself does with None / [B, S] / [4, B, S] positions (see its forward).
        if pos is None:
            pos_np = np.broadcast_to(np.arange(s), (3, s))
        else:
            pos_np = pos.detach().cpu().numpy()
            if pos_np.ndim == 2:
                pos_np = np.broadcast_to(pos_np[0], (3, s))
            elif pos_np.shape[0] == 4:
                pos_np = pos_np[1:, 0]
            else:
                pos_np = pos_np[:, 0]
        ids_np = ids[0].cpu().numpy()
        mod = np.full(s, TEXT, dtype=np.int32)
        mod[ids_np == self.image_token_id] = VISION
        if self.audio_token_id is not None:
            mod[ids_np == self.audio_token_id] = AUDIO
        if self.video_as_vision and self.video_token_id is not None:
            mod[ids_np == self.video_token_id] = VISION
        if not np.isfinite(emb).all():
            bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
            kinds = sorted({NAMES[m] for m in mod[bad]})
            raise NonFiniteError(
                f"{where}: sample {index} has NaN/Inf in its decoder inputs ({len(bad)} tokens, {'/'.join(kinds)}); "
                "check the media file or the encoder weights"
            )
        return CalibSample(modality_ids=mod, position_ids=np.ascontiguousarray(pos_np, dtype=np.int32),
                           inputs_embeds=np.ascontiguousarray(emb, dtype=np.float32))


def _media_digest(entries: list[ManifestEntry]) -> str:
    from .cache import hash_file

    import hashlib

    h = hashlib.sha256()
    for e in entries:
        for p in e.images + e.audios:
            h.update(str(p).encode())
            h.update(hash_file(p).encode())
        for p in e.videos:
            h.update(str(p).encode())
            if p.is_dir():
                for f in sorted(p.iterdir()):
                    if f.is_file():
                        h.update(f.name.encode())
                        h.update(hash_file(f).encode())
    return h.hexdigest()


def manifest_calibset(
    manifest: str | os.PathLike,
    model_dir: str | os.PathLike,
    *,
    samples: int = 128,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    dtype: str = "float32",
    device: str = "cpu",
    video_as_vision: bool = False,
    use_chat_template: bool | None = None,
    progress: bool | None = None,
) -> CalibSet:
    """Decoder inputs for (a seeded subsample of ``samples``) manifest lines, cached by content.

    The manifest is validated (every line, every file) before the model is loaded. The cache key
    covers the checkpoint (config/processor/tokenizer files by content, weights by identity), the
    manifest and media bytes, the chosen lines, ``samples``, ``seed`` and the front-end settings.
    """
    from . import cache as _cache

    manifest = Path(manifest)
    entries = read_manifest(manifest)
    if len(entries) > samples:
        idx = np.sort(np.random.default_rng(seed).permutation(len(entries))[:samples])
        entries = [entries[i] for i in idx]
    if not Path(model_dir).is_dir():
        raise CalibSourceError(f"{model_dir}: model_dir must be an HF checkpoint folder for a multimodal manifest")
    key_parts = {
        "kind": "hf-manifest",
        "model": _cache.fingerprint_model_dir(model_dir),
        "manifest": _cache.hash_file(manifest),
        "media": _media_digest(entries),
        "lines": [e.line for e in entries],
        "samples": samples,
        "seed": seed,
        "dtype": dtype,
        "device": device,
        "video_as_vision": video_as_vision,
        "use_chat_template": use_chat_template,
    }
    try:
        import torch
        import transformers

        key_parts["versions"] = [transformers.__version__, torch.__version__]
    except ImportError:
        pass
    key = _cache.cache_key(key_parts)
    path = _cache.cache_path(cache_dir, key)
    if use_cache:
        hit = _cache.load_cached(path, key)
        if hit is not None:
            return hit
    fe = HFFrontEnd(model_dir, dtype=dtype, video_as_vision=video_as_vision, use_chat_template=use_chat_template,
                    device=device)
    for e in entries:  # every prompt (placeholder counts, modalities the model takes) before any encoding
        fe.prompt(e, e.where(manifest))
    show = sys.stderr.isatty() if progress is None else progress
    out = []
    for i, e in enumerate(entries):
        out.append(fe(e, e.where(manifest), i))
        if show:
            print(f"\rcalibration front end: {i + 1}/{len(entries)} samples", end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    meta = {
        "source": str(manifest),
        "model_dir": str(model_dir),
        "model_type": fe.model_type,
        "manifest_lines": [e.line for e in entries],
        "seed": seed,
        **fe.settings(),
    }
    cs = CalibSet(out, meta)
    if use_cache:
        _cache.store(path, cs, key)
    return cs
