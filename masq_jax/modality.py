"""The one place for modality ids and names (docs/method.md §0).

Every token belongs to exactly one modality: 0 text, 1 vision, 2 audio. Text is the base modality:
decode tokens, chat-template tokens and delimiters are text; the CMC branch exists only for the others.
"""

from __future__ import annotations

TEXT, VISION, AUDIO = 0, 1, 2
NAMES: tuple[str, ...] = ("text", "vision", "audio")
IDS: dict[str, int] = {name: i for i, name in enumerate(NAMES)}
NUM_MODALITIES = len(NAMES)
NON_TEXT: tuple[int, ...] = (VISION, AUDIO)
BASE = TEXT  # the stored weight is smoothed for text (docs/method.md §5)
