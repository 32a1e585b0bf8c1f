"""CalibSet: validation, padding/bucketing, counts, seeded selection, require_modalities."""

import numpy as np
import pytest

from masq_jax.calib import (
    CalibFormatError,
    CalibSet,
    MissingModalityError,
    NonFiniteError,
    make_sample,
    require_modalities,
)


def _embeds_set(lengths, hidden=8, rope3=True, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        mod = rng.integers(0, 3, size=n)
        p = np.sort(rng.integers(0, 3 * n, size=n))
        pos = np.stack([p, p + rng.integers(0, 2, size=n), p]) if rope3 else p
        out.append(dict(modality_ids=mod, position_ids=pos, inputs_embeds=rng.standard_normal((n, hidden))))
    return CalibSet.from_samples(out)


def _ids_set(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return CalibSet.from_samples(
        [dict(modality_ids=np.zeros(n, int), position_ids=np.arange(n), input_ids=rng.integers(1, 100, n)) for n in lengths]
    )


def test_make_sample_normalises_dtypes():
    s = make_sample(np.array([0, 1, 2]), np.arange(3, dtype=np.int64), inputs_embeds=np.ones((3, 4)))
    assert s.modality_ids.dtype == np.int32 and s.position_ids.dtype == np.int32
    assert s.inputs_embeds.dtype == np.float32 and s.length == 3


@pytest.mark.parametrize(
    "kwargs, exc, needle",
    [
        (dict(modality_ids=[0, 1], position_ids=[0, 1]), CalibFormatError, "exactly one"),
        (dict(modality_ids=[0, 1], position_ids=[0, 1], input_ids=[1, 2], inputs_embeds=np.ones((2, 2))), CalibFormatError, "exactly one"),
        (dict(modality_ids=[0, 3], position_ids=[0, 1], input_ids=[1, 2]), CalibFormatError, "found 3"),
        (dict(modality_ids=[0, 1], position_ids=[0, 1, 2], input_ids=[1, 2]), CalibFormatError, "position_ids"),
        (dict(modality_ids=[0, 1], position_ids=np.zeros((2, 2), int), input_ids=[1, 2]), CalibFormatError, "position_ids"),
        (dict(modality_ids=[0, 1], position_ids=[0, 1], input_ids=[1.0, 2.0]), CalibFormatError, "integer"),
        (dict(modality_ids=[0, 1], position_ids=[0, 1], input_ids=[1, -2]), CalibFormatError, "negative"),
        (dict(modality_ids=[0, 1], position_ids=[0, 1], inputs_embeds=np.ones((2, 3), int)), CalibFormatError, "floating"),
        (dict(modality_ids=[0, 1], position_ids=[0, 1], inputs_embeds=np.ones((3, 3))), CalibFormatError, "shape"),
        (dict(modality_ids=np.zeros(0, int), position_ids=np.zeros(0, int), input_ids=np.zeros(0, int)), CalibFormatError, "S >= 1"),
        (dict(modality_ids=[0, 1], position_ids=[0, 1], inputs_embeds=np.array([[0.0, np.nan], [1, 1]])), NonFiniteError, "sample 4"),
    ],
)
def test_make_sample_errors(kwargs, exc, needle):
    with pytest.raises(exc, match=needle) as ei:
        make_sample(**kwargs, index=4)
    assert "\n" not in str(ei.value)


def test_calibset_rejects_mixed_samples():
    a = make_sample([0, 0], [0, 1], input_ids=[1, 2])
    b = make_sample([0, 0], [0, 1], inputs_embeds=np.ones((2, 2)))
    c = make_sample([0, 0], np.zeros((3, 2), int), input_ids=[1, 2])
    d = make_sample([0, 0], [0, 1], inputs_embeds=np.ones((2, 3)))
    with pytest.raises(CalibFormatError, match="sample 1"):
        CalibSet([a, b])
    with pytest.raises(CalibFormatError, match="rank"):
        CalibSet([a, c])
    with pytest.raises(CalibFormatError, match="hidden size"):
        CalibSet([b, d])
    with pytest.raises(CalibFormatError, match="at least one"):
        CalibSet([])


def test_token_counts_match_bincount():
    cs = _embeds_set([5, 9, 13])
    allmods = np.concatenate([s.modality_ids for s in cs])
    ref = np.bincount(allmods, minlength=3)
    assert cs.token_counts() == {"text": ref[0], "vision": ref[1], "audio": ref[2]}
    assert cs.num_tokens == 27 and cs.max_len == 13


@pytest.mark.parametrize("rope3", [True, False])
@pytest.mark.parametrize("fill_last", [False, True])
def test_batches_pad_and_bucket(rope3, fill_last):
    lengths = [3, 17, 8, 16, 5, 30, 9]
    cs = _embeds_set(lengths, rope3=rope3)
    buckets = [8, 16, 32]
    seen = []
    for b in cs.batches(batch_size=2, bucket_sizes=buckets, fill_last=fill_last):
        B, L = b["attention_mask"].shape
        assert L in buckets
        assert b["inputs_embeds"].shape == (B, L, 8)
        assert b["position_ids"].shape == ((3, B, L) if rope3 else (B, L))
        assert B == 2 if fill_last else 1 <= B <= 2
        for r, i in enumerate(b["sample_index"]):
            if i < 0:
                assert fill_last and not b["attention_mask"][r].any()
                continue
            s = cs[int(i)]
            n = s.length
            # smallest bucket that holds the sample
            assert L == min(x for x in buckets if x >= n)
            np.testing.assert_array_equal(b["attention_mask"][r], np.r_[np.ones(n), np.zeros(L - n)])
            np.testing.assert_array_equal(b["inputs_embeds"][r, :n], s.inputs_embeds)
            assert not b["inputs_embeds"][r, n:].any()
            np.testing.assert_array_equal(b["modality_ids"][r, :n], s.modality_ids)
            assert not b["modality_ids"][r, n:].any()  # pad modality = text, masked out
            pos = b["position_ids"][..., r, :]
            np.testing.assert_array_equal(pos[..., :n], s.position_ids)
            if L > n:  # pads count on past the row's maximum: finite and increasing
                tail = pos[..., n:]
                assert (np.diff(tail, axis=-1) == 1).all()
                assert (tail[..., 0] == np.max(s.position_ids, axis=-1) + 1).all()
            seen.append(int(i))
    assert sorted(seen) == list(range(len(lengths)))


def test_batches_default_bucket_and_errors():
    cs = _ids_set([5, 11])
    bs = list(cs.batches(batch_size=4, pad_id=7))
    assert len(bs) == 1 and bs[0]["input_ids"].shape == (2, 16)
    assert (bs[0]["input_ids"][0, 5:] == 7).all()
    with pytest.raises(CalibFormatError, match="largest bucket is 8"):
        list(cs.batches(bucket_sizes=[4, 8]))
    with pytest.raises(CalibFormatError, match="batch_size"):
        list(cs.batches(batch_size=0))


def test_batches_shuffle_is_seeded():
    cs = _ids_set([4] * 10)
    order = lambda seed: [int(i) for b in cs.batches(batch_size=3, shuffle_seed=seed) for i in b["sample_index"]]
    assert order(1) == order(1)
    assert sorted(order(1)) == list(range(10))
    assert order(1) != order(2)


def test_subsample_and_split_deterministic():
    cs = _ids_set(list(range(3, 43)))
    a, b = cs.subsample(10, seed=3), cs.subsample(10, seed=3)
    assert a.fingerprint() == b.fingerprint() and len(a) == 10
    assert cs.subsample(10, seed=4).fingerprint() != a.fingerprint()
    assert cs.subsample(100, seed=0).fingerprint() == cs.fingerprint()
    # original order is kept
    assert list(a.lengths) == sorted(a.lengths)
    tr, ho = cs.split(0.25, seed=1)
    assert len(ho) == 10 and len(tr) == 30
    assert sorted(list(tr.lengths) + list(ho.lengths)) == list(cs.lengths)
    assert set(tr.lengths).isdisjoint(set(ho.lengths))
    tr2, ho2 = cs.split(10, seed=1)
    assert ho2.fingerprint() == ho.fingerprint()
    for bad in (0, 40, 1.5, "x"):
        with pytest.raises(CalibFormatError):
            cs.split(bad)
    with pytest.raises(CalibFormatError):
        cs.subsample(0)


def test_truncate_and_rope_ndim():
    cs = _ids_set([5, 12])
    t = cs.truncate(8)
    assert list(t.lengths) == [5, 8]
    np.testing.assert_array_equal(t[1].input_ids, cs[1].input_ids[:8])
    c3 = cs.with_rope_ndim(3)
    assert c3.rope_ndim == 3 and c3[1].position_ids.shape == (3, 12)
    assert (c3[1].position_ids == np.arange(12)).all()
    assert c3.with_rope_ndim(1).fingerprint() == cs.fingerprint()
    mm = _embeds_set([6], rope3=True, seed=5)
    with pytest.raises(CalibFormatError, match="differ between rows"):
        mm.with_rope_ndim(1)


def test_require_modalities():
    cs = CalibSet.from_samples([dict(modality_ids=[0, 0, 2], position_ids=[0, 1, 2], input_ids=[1, 2, 3])])
    assert require_modalities(cs, ["text", "audio"]) == {"text": 2, "vision": 0, "audio": 1}
    with pytest.raises(MissingModalityError, match="needs vision tokens") as ei:
        require_modalities(cs, ["text", "vision"])
    assert "\n" not in str(ei.value) and "vision=0" in str(ei.value)
    with pytest.raises(MissingModalityError, match="at least 2"):
        require_modalities(cs, ["audio"], min_tokens=2)
    with pytest.raises(MissingModalityError, match="unknown modality"):
        require_modalities(cs, ["video"])
    assert cs.modalities() == ("text", "audio")
