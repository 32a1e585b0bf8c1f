"""The omni-SmolLM2 task generators: deterministic, splits disjoint by construction (and by hash),
"no" match pairs one digit apart, real rendered text and real synthesised speech."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from examples.omni_smollm2 import data
from examples.omni_smollm2.render import HEIGHT, WIDTH, render_text
from examples.omni_smollm2.speech import SAMPLE_RATE, speak


def _same(a: data.Example, b: data.Example) -> bool:
    arrays = [(x, y) for x, y in ((a.image, b.image), (a.audio, b.audio))]
    return (a.label, a.answer) == (b.label, b.answer) and all(
        (x is None and y is None) or np.array_equal(x, y) for x, y in arrays)


@pytest.mark.parametrize("task", data.TASKS)
def test_examples_are_a_pure_function_of_their_arguments(task):
    first, again = data.examples(task, "test", 3, seed=5), data.examples(task, "test", 3, seed=5)
    assert all(_same(a, b) for a, b in zip(first, again))
    other = data.examples(task, "test", 3, seed=6)
    assert [e.label for e in other] != [e.label for e in first]


def test_splits_are_disjoint_by_construction_and_by_hash():
    counts = collections.Counter(data.split_of(str(i)) for i in range(20000))
    assert abs(counts["train"] / 20000 - 0.8) < 0.02 and abs(counts["test"] / 20000 - 0.1) < 0.01
    for task in data.TASKS:
        hashes = {s: data.split_hashes(data.examples(task, s, 12, seed=0)) for s in data.SPLITS}
        assert not hashes["train"] & hashes["test"] and not hashes["calib"] & hashes["test"]
        assert not hashes["train"] & hashes["calib"]
    for e in data.examples("match", "test", 12, seed=1):
        assert all(data.split_of(part) == "test" for part in e.label.split("|"))


def test_match_pairs_differ_in_one_digit_when_the_answer_is_no():
    items = data.examples("match", "calib", 16, seed=2)
    assert {e.answer for e in items} == {"yes", "no"}
    for e in items:
        spoken, shown = e.label.split("|")
        diff = sum(a != b for a, b in zip(spoken, shown))
        assert len(spoken) == len(shown) and diff == (0 if e.answer == "yes" else 1)


def test_labels_answers_and_media():
    ocr = data.examples("ocr", "train", 4, seed=3)
    assert all(4 <= len(e.label) <= 8 and set(e.label) <= set(data.OCR_CHARS) and e.answer == e.label for e in ocr)
    asr = data.examples("asr", "train", 2, seed=3)
    assert asr[0].answer == data.digits_as_words(asr[0].label) and asr[0].image is None
    assert data.digits_as_words("407") == "four zero seven"


def test_rendered_text_has_ink_where_the_text_is():
    img = render_text("8888", np.random.default_rng(0))
    assert img.shape == (HEIGHT, WIDTH) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    cols = img.mean(axis=0)
    assert cols[WIDTH // 2 - 10: WIDTH // 2 + 10].mean() > 2 * cols[:8].mean()  # centred ink, dark margins
    half = render_text("88", np.random.default_rng(0))  # same font, size and pose: half the ink
    assert 0.3 < (half > 0.5).sum() / (img > 0.5).sum() < 0.7


def test_speech_is_real_audio_that_grows_with_the_words():
    short = speak("four", np.random.default_rng(0))
    long = speak("four two seven nine one", np.random.default_rng(0))
    assert short.dtype == np.float32 and np.isfinite(long).all()
    assert 0.2 * SAMPLE_RATE < len(short) < len(long) < 5 * SAMPLE_RATE
    lead = short[: SAMPLE_RATE // 20]  # noise-only lead-in, quieter than the speech
    assert np.sqrt((lead ** 2).mean()) < 0.5 * np.sqrt((short ** 2).mean())


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(data.TaskDataError, match="split must be one of"):
        data.examples("ocr", "dev", 1)
    with pytest.raises(data.TaskDataError, match="task must be one of"):
        data.examples("tts", "test", 1)
    with pytest.raises(data.TaskDataError, match="n must be >= 0"):
        data.examples("ocr", "test", -1)


def test_speech_is_the_same_in_a_fresh_synthesis_process():
    """The breathy voices draw noise from eSpeak's clock-seeded generator: a new server process some
    seconds later must give the same samples (else calibration sets differ from run to run)."""
    import time

    from examples.omni_smollm2 import speech

    first = speech.engine().synth("seven four two", "en+f2", 160, 50)
    for _ in range(2):
        old = speech.engine()  # one object: a second engine() after the kill may already start a new server
        old.proc.kill()
        old.proc.wait()
        time.sleep(1.5)
        assert np.array_equal(speech.engine().synth("seven four two", "en+f2", 160, 50), first)
