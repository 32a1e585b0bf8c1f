"""npz round trip (the bring-your-own layout) and every validation error, one line each."""

import os

import numpy as np
import pytest

from masq_jax.calib import CalibFormatError, CalibSet, NonFiniteError, load_npz, synthetic_calibset
from masq_jax.calib import io as calib_io


def _ids_set():
    return CalibSet.from_samples(
        [dict(modality_ids=np.zeros(n, int), position_ids=np.arange(n), input_ids=np.arange(1, n + 1)) for n in (4, 9, 6)],
        meta={"source": "unit"},
    )


@pytest.mark.parametrize("which", ["embeds3d", "ids1d"])
@pytest.mark.parametrize("compress", [False, True])
def test_roundtrip_bitwise(tmp_path, which, compress):
    cs = synthetic_calibset(hidden_size=16, samples=5, image_h=2, image_w=3, audio_len=4, text_len=6) if which == "embeds3d" else _ids_set()
    p = tmp_path / "c.npz"
    cs.save(p, compress=compress)
    back = CalibSet.load(p)
    assert back.fingerprint() == cs.fingerprint()
    assert back.kind == cs.kind and back.rope_ndim == cs.rope_ndim
    assert back.meta["source"] == cs.meta["source"]
    with np.load(p) as z:  # the bring-your-own layout on disk
        n, s = len(cs), cs.max_len
        assert z["modality_ids"].shape == (n, s) and z["attention_mask"].shape == (n, s)
        assert z["position_ids"].shape == ((3, n, s) if cs.rope_ndim == 3 else (n, s))
    assert not [f for f in os.listdir(tmp_path) if f != "c.npz"]  # no temp files left


def test_byo_arrays_left_padding_and_no_mask(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((2, 5, 4)).astype(np.float64)
    mod = np.array([[0, 0, 1, 1, 0], [0, 2, 2, 0, 0]])
    pos = np.broadcast_to(np.arange(5), (3, 2, 5)).copy()
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=bool)
    np.savez(tmp_path / "b.npz", inputs_embeds=emb, modality_ids=mod, position_ids=pos, attention_mask=mask)
    cs = load_npz(tmp_path / "b.npz")
    assert list(cs.lengths) == [3, 5]
    np.testing.assert_array_equal(cs[0].inputs_embeds, emb[0, 2:].astype(np.float32))
    np.testing.assert_array_equal(cs[0].position_ids, pos[:, 0, 2:])
    np.testing.assert_array_equal(cs[0].modality_ids, [1, 1, 0])
    assert cs[0].inputs_embeds.dtype == np.float32
    np.savez(tmp_path / "c.npz", input_ids=np.ones((2, 5), np.int64), modality_ids=mod, position_ids=pos[0])
    cs2 = load_npz(tmp_path / "c.npz")
    assert list(cs2.lengths) == [5, 5] and cs2.rope_ndim == 1 and cs2.kind == "ids"


def _base():
    n, s, h = 3, 4, 2
    return dict(
        inputs_embeds=np.zeros((n, s, h), np.float32),
        modality_ids=np.zeros((n, s), np.int32),
        position_ids=np.zeros((3, n, s), np.int32),
        attention_mask=np.ones((n, s), np.int32),
    )


def _mutate(**changes):
    d = _base()
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v(d) if callable(v) else v
    return d


def _set(d, key, idx, val):
    a = d[key].copy()
    a[idx] = val
    return a


CASES = [
    ("neither", _mutate(inputs_embeds=None), CalibFormatError, "found neither"),
    ("both", _mutate(input_ids=np.zeros((3, 4), np.int32)), CalibFormatError, "found both"),
    ("no_modality", _mutate(modality_ids=None), CalibFormatError, "missing required key 'modality_ids'"),
    ("no_positions", _mutate(position_ids=None), CalibFormatError, "missing required key 'position_ids'"),
    ("modality_value", _mutate(modality_ids=lambda d: _set(d, "modality_ids", (2, 1), 5)), CalibFormatError, "sample 2 token 1 is 5"),
    ("modality_float", _mutate(modality_ids=np.zeros((3, 4))), CalibFormatError, "modality_ids must be integer"),
    ("modality_rank", _mutate(modality_ids=np.zeros((3, 4, 1), np.int32)), CalibFormatError, r"shape \[N, S\]"),
    ("pos_shape", _mutate(position_ids=np.zeros((3, 3, 5), np.int32)), CalibFormatError, r"position_ids must have shape \[3, 3, 4\]"),
    ("pos_float", _mutate(position_ids=np.zeros((3, 3, 4))), CalibFormatError, "position_ids must be integer"),
    ("emb_int", _mutate(inputs_embeds=np.zeros((3, 4, 2), np.int32)), CalibFormatError, "inputs_embeds must be float"),
    ("emb_shape", _mutate(inputs_embeds=np.zeros((3, 5, 2), np.float32)), CalibFormatError, r"inputs_embeds must have shape \[3, 4, H\]"),
    ("emb_nan", _mutate(inputs_embeds=lambda d: _set(d, "inputs_embeds", (1, 2, 0), np.nan)), NonFiniteError, "sample 1 contains NaN"),
    ("emb_inf", _mutate(inputs_embeds=lambda d: _set(d, "inputs_embeds", (2, 0, 1), np.inf)), NonFiniteError, "sample 2"),
    ("mask_shape", _mutate(attention_mask=np.ones((3, 5), np.int32)), CalibFormatError, "attention_mask must have shape"),
    ("mask_values", _mutate(attention_mask=lambda d: _set(d, "attention_mask", (0, 0), 2)), CalibFormatError, "only 0/1"),
    ("mask_empty", _mutate(attention_mask=lambda d: _set(d, "attention_mask", 1, 0)), CalibFormatError, "sample 1 has no real token"),
    ("ids_float", _mutate(inputs_embeds=None, input_ids=np.zeros((3, 4))), CalibFormatError, "input_ids must be integer"),
    ("ids_shape", _mutate(inputs_embeds=None, input_ids=np.zeros((3, 2), np.int32)), CalibFormatError, r"input_ids must have shape \[3, 4\]"),
    ("ids_negative", _mutate(inputs_embeds=None, input_ids=lambda d: _set({"x": np.zeros((3, 4), np.int32)}, "x", (2, 3), -1)), CalibFormatError, "sample 2 has a negative"),
]


@pytest.mark.parametrize("name, arrays, exc, needle", CASES, ids=[c[0] for c in CASES])
def test_validation_errors(tmp_path, name, arrays, exc, needle):
    p = tmp_path / f"{name}.npz"
    np.savez(p, **arrays)
    with pytest.raises(exc, match=needle) as ei:
        load_npz(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg


def test_negative_ids_in_padding_are_fine(tmp_path):
    ids = np.full((1, 4), -100, np.int64)
    ids[0, :2] = [5, 6]
    np.savez(tmp_path / "p.npz", input_ids=ids, modality_ids=np.zeros((1, 4), int),
             position_ids=np.arange(4)[None], attention_mask=np.array([[1, 1, 0, 0]]))
    assert list(load_npz(tmp_path / "p.npz")[0].input_ids) == [5, 6]


def test_unreadable_files(tmp_path):
    with pytest.raises(CalibFormatError, match="no such calibration file"):
        load_npz(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(CalibFormatError, match="not a readable .npz"):
        load_npz(bad)
    obj = tmp_path / "obj.npz"
    np.savez(obj, modality_ids=np.array([None, 1], dtype=object))
    with pytest.raises(CalibFormatError, match="not a readable .npz"):
        load_npz(obj)


def test_unknown_keys_warn(tmp_path):
    d = _base()
    d["extra"] = np.zeros(2)
    np.savez(tmp_path / "u.npz", **d)
    with pytest.warns(UserWarning, match="ignoring unknown keys"):
        load_npz(tmp_path / "u.npz")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "c.npz"
    cs = _ids_set()
    cs.save(p)
    before = p.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(calib_io.np, "savez", boom)
    with pytest.raises(RuntimeError):
        cs.truncate(2).save(p)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]
