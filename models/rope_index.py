"""Host-side NumPy port of transformers' ``get_rope_index`` (3-D multimodal RoPE position ids).

``omni_rope_index`` follows Qwen2_5OmniPreTrainedModelForConditionalGeneration.get_rope_index (image,
video, audio, audio-in-video with 2-second chunk interleaving); ``vl_rope_index`` follows
Qwen2_5_VLModel.get_rope_index of transformers 5 (token-type groups; text after a vision block resumes
at start + max(h, w) / merge). Both return (position_ids [3, B, S] int64, deltas [B, 1] int64), equal
to transformers' (tests compare them on tiny configs, padding included). Quirks kept on purpose:
padded positions hold 1 (Omni) / 0 (VL), and Omni input without image/video grids falls back to
1-D positions from the attention mask even when audio is present — exactly as transformers does.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from masq_jax.models.config import DecoderConfig
from masq_jax.models.errors import InputError


def _ar3(n: int, start: int) -> np.ndarray:
    return np.broadcast_to(np.arange(n, dtype=np.int64)[None], (3, n)) + start


def _vision_pos(start: int, grid_thw: np.ndarray, merge: int, t_index: np.ndarray) -> np.ndarray:
    """Omni: [3, T*h*w] with (t, h, w) indices + start (h, w after spatial merge)."""
    gh, gw = int(grid_thw[1]) // merge, int(grid_thw[2]) // merge
    t = np.repeat(t_index.astype(np.int64), gh * gw)
    h = np.tile(np.repeat(np.arange(gh, dtype=np.int64), gw), len(t_index))
    w = np.tile(np.arange(gw, dtype=np.int64), len(t_index) * gh)
    return np.stack([t, h, w]) + start


def _chunked_index(token_indices: np.ndarray, tokens_per_chunk: int, remove_index: int) -> list[tuple[int, int]]:
    out, start, chunk = [], 0, 1
    for i in range(len(token_indices)):
        if token_indices[i] - remove_index >= chunk * tokens_per_chunk:
            out.append((start, i))
            start = i
            chunk += 1
    out.append((start, len(token_indices)))
    return out


def _audio_len(seqlen: int) -> int:
    return ((int(seqlen) - 1) // 2 + 1 - 2) // 2 + 1


def _text_only(attention_mask: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    mask = np.ones(shape, np.int64) if attention_mask is None else np.asarray(attention_mask).astype(np.int64)
    pos = np.cumsum(mask, -1) - 1
    pos = np.where(mask == 0, 1, pos)
    pos3 = np.broadcast_to(pos[None], (3, *shape)).copy()
    deltas = pos3.max(0).max(-1, keepdims=True) + 1 - mask.sum(-1, keepdims=True)
    return pos3, deltas


def omni_rope_index(
    input_ids: np.ndarray,
    *,
    image_token_id: int,
    video_token_id: int,
    audio_token_id: int,
    vision_start_token_id: int,
    audio_start_token_id: int,
    spatial_merge_size: int = 2,
    position_id_per_seconds: int = 25,
    seconds_per_chunk: int = 2,
    image_grid_thw: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
    use_audio_in_video: bool = False,
    audio_seqlens: Sequence[int] | None = None,
    second_per_grids: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-Omni Thinker 3-D positions. ``audio_seqlens`` are the audio feature lengths (mel frames)."""
    ids_all = np.asarray(input_ids)
    if ids_all.ndim != 2:
        raise InputError(f"input_ids must be [B, S], got shape {ids_all.shape}")
    if image_grid_thw is None and video_grid_thw is None:
        return _text_only(attention_mask, ids_all.shape)
    mask = None if attention_mask is None else np.asarray(attention_mask) == 1
    img = None if image_grid_thw is None else np.asarray(image_grid_thw, np.int64).reshape(-1, 3)
    vid = None if video_grid_thw is None else np.asarray(video_grid_thw, np.int64).reshape(-1, 3)
    spg = None if second_per_grids is None else np.asarray(second_per_grids, np.float32).reshape(-1)
    merge, pps = spatial_merge_size, position_id_per_seconds
    position_ids = np.ones((3, *ids_all.shape), np.int64)
    deltas = []
    image_idx = video_idx = audio_idx = 0

    def need(arr, idx, what):
        if arr is None or idx >= len(arr):
            raise InputError(f"more {what} placeholders in input_ids than entries in {what} (index {idx})")
        return arr[idx]

    for b in range(ids_all.shape[0]):
        ids = ids_all[b] if mask is None else ids_all[b][mask[b]]
        vs = np.flatnonzero(ids == vision_start_token_id)
        vs = vs[vs + 1 < len(ids)]
        vision_tokens = ids[vs + 1]
        audio_nums = int(np.sum(ids == audio_start_token_id))
        image_nums = int(np.sum(vision_tokens == image_token_id))
        video_nums = int(np.sum(vision_tokens == (audio_start_token_id if use_audio_in_video else video_token_id)))
        tokens = ids.tolist()
        pos_list: list[np.ndarray] = []
        st = 0
        remain_i, remain_v, remain_a = image_nums, video_nums, audio_nums
        total = image_nums + audio_nums if use_audio_in_video else image_nums + video_nums + audio_nums

        def nxt() -> int:
            return int(pos_list[-1].max()) + 1 if pos_list else 0

        def find(tok, remain):
            if remain > 0 and tok in tokens:
                try:
                    return tokens.index(tok, st)
                except ValueError:  # transformers' list.index would raise here too
                    raise InputError(f"placeholder token {tok} expected after position {st} but not found") from None
            return len(tokens) + 1

        for _ in range(total):
            ed_i, ed_v, ed_a = find(image_token_id, remain_i), find(video_token_id, remain_v), find(audio_token_id, remain_a)
            min_ed = min(ed_i, ed_v, ed_a)
            if min_ed == ed_a:
                text_len = min_ed - st - 1
                if text_len != 0:
                    pos_list.append(_ar3(text_len, nxt()))
                pos_list.append(_ar3(1, nxt()))
                alen = _audio_len(need(audio_seqlens, audio_idx, "audio_seqlens"))
                pos_list.append(_ar3(alen, nxt()))
                pos_list.append(_ar3(1, nxt()))
                st += text_len + 1 + alen + 1
                audio_idx += 1
                remain_a -= 1
            elif min_ed == ed_i:
                text_len = min_ed - st - 1
                if text_len != 0:
                    pos_list.append(_ar3(text_len, nxt()))
                pos_list.append(_ar3(1, nxt()))
                g = need(img, image_idx, "image_grid_thw")
                t_index = np.arange(g[0], dtype=np.int64) * 1 * pps
                pos_list.append(_vision_pos(nxt(), g, merge, t_index))
                pos_list.append(_ar3(1, nxt()))
                st += text_len + 1 + int(np.prod(g)) // merge**2 + 1
                image_idx += 1
                remain_i -= 1
            elif min_ed == ed_v and not use_audio_in_video:
                text_len = min_ed - st - 1
                if text_len != 0:
                    pos_list.append(_ar3(text_len, nxt()))
                pos_list.append(_ar3(1, nxt()))
                g = need(vid, video_idx, "video_grid_thw")
                s = np.float32(1.0) if spg is None else need(spg, video_idx, "second_per_grids")
                t_index = (np.arange(g[0]).astype(np.float32) * s * np.float32(pps)).astype(np.int64)
                pos_list.append(_vision_pos(nxt(), g, merge, t_index))
                pos_list.append(_ar3(1, nxt()))
                st += text_len + 1 + int(np.prod(g)) // merge**2 + 1
                video_idx += 1
                remain_v -= 1
            elif min_ed == ed_v and use_audio_in_video:
                text_len = min_ed - st - 2
                if text_len != 0:
                    pos_list.append(_ar3(text_len, nxt()))
                start = nxt()
                pos_list.append(_ar3(1, start))
                pos_list.append(_ar3(1, start))
                start = nxt()
                alen = _audio_len(need(audio_seqlens, audio_idx, "audio_seqlens"))
                audio_pos = _ar3(alen, start)
                g = need(vid, video_idx, "video_grid_thw")
                s = np.float32(1.0) if spg is None else need(spg, video_idx, "second_per_grids")
                t_index = (np.arange(g[0]).astype(np.float32) * s * np.float32(pps)).astype(np.int64)
                video_pos = _vision_pos(start, g, merge, t_index)
                per_chunk = int(pps * seconds_per_chunk)
                v_chunks = _chunked_index(video_pos[0], per_chunk, start)
                a_chunks = _chunked_index(audio_pos[0], per_chunk, start)
                for j in range(max(len(v_chunks), len(a_chunks))):
                    if j < len(v_chunks):
                        pos_list.append(video_pos[:, v_chunks[j][0] : v_chunks[j][1]])
                    if j < len(a_chunks):
                        pos_list.append(audio_pos[:, a_chunks[j][0] : a_chunks[j][1]])
                vlen = int(np.prod(g)) // merge**2
                end = nxt()
                pos_list.append(_ar3(1, end))
                pos_list.append(_ar3(1, end))
                st += text_len + 2 + alen + vlen + 2
                audio_idx += 1
                video_idx += 1
                remain_v -= 1
                remain_a -= 1
        if st < len(tokens):
            pos_list.append(_ar3(len(tokens) - st, nxt()))
        llm = np.concatenate(pos_list, axis=1).reshape(3, -1)
        if llm.shape[1] != len(tokens):
            raise InputError(
                f"sequence {b}: {len(tokens)} tokens but the grids/audio lengths account for {llm.shape[1]}; "
                "check image_grid_thw / video_grid_thw / audio_seqlens against the placeholders"
            )
        if mask is None:
            position_ids[:, b, :] = llm
        else:
            position_ids[:, b, mask[b]] = llm
        deltas.append(int(llm.max()) + 1 - len(tokens))
    return position_ids, np.asarray(deltas, np.int64)[:, None]


def vl_rope_index(
    input_ids: np.ndarray,
    *,
    image_token_id: int,
    video_token_id: int,
    spatial_merge_size: int = 2,
    tokens_per_second: int = 4,
    mm_token_type_ids: np.ndarray | None = None,
    image_grid_thw: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    second_per_grid_ts: Sequence[float] | None = None,
    attention_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-VL 3-D positions. ``mm_token_type_ids`` (0 text, 1 image, 2 video) defaults to the
    processor's rule: 1 where input_ids == image_token_id, 2 where == video_token_id."""
    ids_all = np.asarray(input_ids)
    if ids_all.ndim != 2:
        raise InputError(f"input_ids must be [B, S], got shape {ids_all.shape}")
    if mm_token_type_ids is None:
        mm_token_type_ids = np.where(ids_all == image_token_id, 1, np.where(ids_all == video_token_id, 2, 0))
    types_all = np.asarray(mm_token_type_ids)
    grids = {
        1: iter(np.asarray(image_grid_thw, np.int64).reshape(-1, 3)) if image_grid_thw is not None else iter(()),
        2: iter(np.asarray(video_grid_thw, np.int64).reshape(-1, 3)) if video_grid_thw is not None else iter(()),
    }
    spg = iter(np.asarray(second_per_grid_ts, np.float32).reshape(-1)) if second_per_grid_ts is not None else None
    position_ids = np.zeros((3, *ids_all.shape), np.int64)
    deltas = []
    for b in range(ids_all.shape[0]):
        types = types_all[b]
        n = ids_all.shape[1]
        if attention_mask is not None:
            keep = np.asarray(attention_mask[b]).astype(bool)
            types = types[keep]
            n = int(keep.sum())
        pos_list, cur = [], 0
        start = 0
        for key, grp in itertools.groupby(types.tolist()):
            length = len(list(grp))
            if key == 0:
                pos_list.append(_ar3(length, cur))
                cur += length
            else:
                g = next(grids[key], None)
                if g is None:
                    name = "image_grid_thw" if key == 1 else "video_grid_thw"
                    raise InputError(f"more {'image' if key == 1 else 'video'} blocks in the sequence than rows in {name}")
                if key == 2:
                    s = np.float32(1.0) if spg is None else next(spg)
                    t = (np.arange(g[0]).astype(np.float32) * (np.float32(tokens_per_second) * s)).astype(np.int64)
                else:
                    t = np.arange(g[0], dtype=np.int64)
                gh, gw = int(g[1]) // spatial_merge_size, int(g[2]) // spatial_merge_size
                tt, hh, ww = np.meshgrid(t, np.arange(gh) + cur, np.arange(gw) + cur, indexing="ij")
                vp = np.stack([tt, hh, ww]).reshape(3, -1).astype(np.int64)
                vp[0] += cur
                pos_list.append(vp)
                cur += max(int(g[1]), int(g[2])) // spatial_merge_size
            start += length
        llm = np.concatenate(pos_list, axis=1).reshape(3, -1)
        if llm.shape[1] != n:
            raise InputError(f"sequence {b}: vision grid sizes do not match the number of placeholder tokens")
        if attention_mask is not None:
            position_ids[:, b, np.asarray(attention_mask[b]).astype(bool)] = llm
        else:
            position_ids[:, b] = llm
        deltas.append(int(llm.max()) + 1 - n)
    return position_ids, np.asarray(deltas, np.int64)[:, None]


def get_rope_index(cfg: DecoderConfig, input_ids: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on ``cfg.arch`` with the token ids / merge sizes from the config; ``kwargs`` are the
    grids, masks and audio lengths of omni_rope_index / vl_rope_index."""
    if cfg.arch == "qwen2_5_omni_thinker":
        ids = dict(
            image_token_id=cfg.image_token_id, video_token_id=cfg.video_token_id, audio_token_id=cfg.audio_token_id,
            vision_start_token_id=cfg.vision_start_token_id, audio_start_token_id=cfg.audio_start_token_id,
        )
        missing = [k for k, v in ids.items() if v is None]
        if missing:
            raise InputError(f"the model config lacks {', '.join(missing)} needed for multimodal positions")
        return omni_rope_index(
            input_ids, **ids, spatial_merge_size=cfg.spatial_merge_size,
            position_id_per_seconds=cfg.position_id_per_seconds, seconds_per_chunk=cfg.seconds_per_chunk, **kwargs,
        )
    if cfg.arch == "qwen2_5_vl":
        return vl_rope_index(
            input_ids, image_token_id=cfg.image_token_id, video_token_id=cfg.video_token_id,
            spatial_merge_size=cfg.spatial_merge_size, tokens_per_second=cfg.tokens_per_second, **kwargs,
        )
    raise InputError(f"{cfg.arch} uses 1-D RoPE: position ids are arange (no get_rope_index)")
