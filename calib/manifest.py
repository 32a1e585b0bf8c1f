"""JSONL calibration manifests: one sample a line, validated before any model is loaded.

A line: ``{"text": str, "images": [paths], "audios": [paths], "videos": [paths], "answer": str}``
(only ``text`` is required; paths are relative to the manifest's folder; a video is a folder of
frames). Blank lines and lines starting with ``#`` are skipped. Errors name the line number.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .errors import ManifestError

LIST_KEYS = ("images", "audios", "videos")
KNOWN_KEYS = ("text", "answer", "id") + LIST_KEYS


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One manifest line, with media paths resolved against the manifest's folder."""

    line: int  # 1-based line number in the manifest file
    text: str
    images: tuple[Path, ...] = ()
    audios: tuple[Path, ...] = ()
    videos: tuple[Path, ...] = ()
    answer: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # values of the caller's ``extra_keys``

    def where(self, manifest: str | Path) -> str:
        return f"{manifest}:{self.line}"


def read_manifest(
    path: str | Path, *, check_files: bool = True, extra_keys: tuple[str, ...] = (), kind: str = "manifest"
) -> list[ManifestEntry]:
    """Parse and validate every line; with ``check_files`` also require every named file to exist.

    ``extra_keys`` are further keys a line may hold (returned raw in ``entry.extra``, for the caller
    to validate: the tasks file's ``task`` and ``metric``); ``kind`` names the file in messages.
    """
    path = Path(path)
    known = KNOWN_KEYS + tuple(extra_keys)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ManifestError(f"{path}: {kind} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read the {kind} ({type(e).__name__}: {e})") from None
    base = path.parent
    out: list[ManifestEntry] = []
    for no, raw in enumerate(lines, start=1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{path}:{no}"
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: expected a JSON object like {{\"text\": ..., \"images\": [...]}}")
        unknown = sorted(set(obj) - set(known))
        if unknown:
            raise ManifestError(f"{where}: unknown key(s) {unknown}; known: {list(known)}")
        text = obj.get("text")
        if not isinstance(text, str):
            raise ManifestError(f"{where}: 'text' must be a string (it may be empty: \"\")")
        answer = obj.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise ManifestError(f"{where}: 'answer' must be a string")
        media: dict[str, tuple[Path, ...]] = {}
        for key in LIST_KEYS:
            val = obj.get(key, [])
            if isinstance(val, str):
                val = [val]
            if not isinstance(val, list) or not all(isinstance(v, str) and v for v in val):
                raise ManifestError(f"{where}: '{key}' must be a list of file paths")
            paths = tuple((base / v) if not Path(v).is_absolute() else Path(v) for v in val)
            if check_files:
                for p in paths:
                    if not p.exists():
                        raise ManifestError(f"{where}: {key[:-1]} file not found: {p}")
            media[key] = paths
        if not text and not any(media.values()):
            raise ManifestError(f"{where}: empty sample (no text and no media)")
        extra = {k: obj[k] for k in extra_keys if k in obj}
        out.append(ManifestEntry(line=no, text=text, answer=answer, extra=extra, **media))
    if not out:
        raise ManifestError(f"{path}: the {kind} has no samples")
    return out
