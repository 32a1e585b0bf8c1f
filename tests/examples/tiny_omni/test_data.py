"""tiny-omni data: determinism, disjoint splits, correct answers (checked from the prompts), features."""

import numpy as np
import pytest

from examples.tiny_omni import data as D


def test_tiny_omni_data_is_deterministic_per_seed():
    a, b = D.make_task("match", 12, seed=5), D.make_task("match", 12, seed=5)
    for f in ("input_ids", "answer", "patches", "audio"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    c = D.make_task("match", 12, seed=6)
    assert not np.array_equal(a.patches, c.patches)


def test_tiny_omni_splits_never_share_media():
    hashes = {s: set() for s in D.SPLIT_SEEDS}
    for s in D.SPLIT_SEEDS:
        for b in D.make_split(s, 20).values():
            hashes[s] |= D.media_hashes(b)
    assert all(len(h) >= 60 for h in hashes.values())  # 20 vision + 20 audio + 20 match images/audios
    names = list(hashes)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert not hashes[names[i]] & hashes[names[j]], (names[i], names[j])


def test_tiny_omni_text_answers_follow_from_the_prompt():
    b = D.make_task("text", 60, seed=3)
    inv = {i: t for t, i in D.TOK.items()}
    for ids, ans in zip(b.input_ids, b.answer):
        _, x, op, y, eq = (inv[int(i)] for i in ids)
        want = int(x) + int(y) if op == "plus" else int(x) - int(y)
        assert eq == "=" and inv[int(ans[0])] == str(want) and inv[int(ans[1])] == "<eos>"


def test_tiny_omni_task_layouts_and_balanced_classes():
    for task in D.TASKS:
        b = D.make_task(task, 40, seed=1)
        assert (b.input_ids == b.input_ids[0]).all() or task == "text"
        n_img = (b.input_ids == D.TOK["<image>"]).sum(1)
        n_aud = (b.input_ids == D.TOK["<audio>"]).sum(1)
        assert set(n_img) == {D.N_VISION if task in ("vision", "match") else 0}
        assert set(n_aud) == {D.N_AUDIO if task in ("audio", "match") else 0}
        if task != "match":
            counts = np.bincount(b.answer[:, 0] - D.TOK["0"], minlength=10)
            assert (counts == 4).all()
    m = D.make_task("match", 200, seed=1)
    frac_yes = (m.answer[:, 0] == D.TOK["yes"]).mean()
    assert 0.35 < frac_yes < 0.65


def test_tiny_omni_log_mel_matches_float64_reference():
    rng = np.random.default_rng(0)
    w = D.synth_digit_audio(4, rng)
    # independent: explicit per-frame DFT sums, triangular filters evaluated from their definition
    x = np.pad(w.astype(np.float64), (D.N_FFT // 2, D.N_FFT // 2))
    n = np.arange(D.N_FFT)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / (D.N_FFT - 1))
    kk = np.arange(D.N_FFT // 2 + 1)
    basis = np.exp(-2j * np.pi * np.outer(n, kk) / D.N_FFT)
    frames = np.stack([x[i * D.HOP:i * D.HOP + D.N_FFT] * win for i in range(D.N_FRAMES)])
    power = np.abs(frames @ basis) ** 2
    mel_pts = np.linspace(2595 * np.log10(1 + 60 / 700), 2595 * np.log10(1 + 4000 / 700), D.N_MELS + 2)
    hz = 700 * (10 ** (mel_pts / 2595) - 1)
    f = kk * 8000 / D.N_FFT
    fb = np.array([[max(0.0, min((fi - hz[m]) / (hz[m + 1] - hz[m]), (hz[m + 2] - fi) / (hz[m + 2] - hz[m + 1])))
                    for fi in f] for m in range(D.N_MELS)])
    want = np.log10(power @ fb.T + 1e-6) / 4 + 1
    np.testing.assert_allclose(D.log_mel(w), want, atol=2e-5)


def test_tiny_omni_audio_classes_differ_and_digits_render():
    rng = np.random.default_rng(1)
    mels = np.stack([D.log_mel(D.synth_digit_audio(d, rng)).mean(0) for d in range(10)])
    dist = np.abs(mels[:, None] - mels[None]).sum(-1)
    assert (dist[~np.eye(10, dtype=bool)] > 0.5).all()
    img = D.render_digit(8, rng)
    assert img.shape == (32, 32) and 0 <= img.min() and img.max() <= 1 and (img > 0.5).sum() > 40


def test_tiny_omni_bad_arguments_raise_clear_errors():
    with pytest.raises(D.TinyOmniDataError, match="task"):
        D.make_task("smell", 3, 0)
    with pytest.raises(D.TinyOmniDataError, match="split"):
        D.make_split("dev", 3)
    with pytest.raises(D.TinyOmniDataError, match="digit"):
        D.render_digit(10, np.random.default_rng(0))
