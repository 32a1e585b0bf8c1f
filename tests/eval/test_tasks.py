"""masq_jax.eval.tasks: the tasks file, the four metrics against hand-computed values, the summary
per task and per modality, and the tiny omni front end against the data generator's own inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from masq_jax.errors import MasqError
from masq_jax.eval.tasks import TaskItem, edit_distance, normalize, read_tasks, score, summarize

CKPT = Path(__file__).resolve().parents[2] / "checkpoints" / "tiny-omni"


def test_edit_distance_and_normalisation():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], list("abc")) == 3 and edit_distance("abc", "abc") == 0
    assert normalize("  The CAT, sat!  ") == "the cat sat"


def test_metrics():
    assert score("exact", "Paris.", "paris") == (1.0, 1)
    assert score("exact", "Paris is", "paris") == (0.0, 1)
    assert score("contains", "It is Paris, of course", "paris") == (1.0, 1)
    assert score("wer", "the cat sat on mat", "the cat sat on the mat") == (1.0, 6)  # one deletion
    assert score("wer", "a b c", "x y") == (3.0, 2)  # 2 substitutions + 1 insertion
    assert score("cer", "helo", "hello") == (1.0, 5)


def _item(task, metric, answer, **media):
    return TaskItem(1, task, "q", answer, (metric,) if isinstance(metric, str) else tuple(metric), **media)


def test_summary_per_task_and_modality_uses_corpus_rates():
    img = (Path("a.png"),)
    items = [_item("ocr", "cer", "abcd", images=img), _item("ocr", "cer", "ab", images=img),
             _item("qa", "exact", "yes"), _item("qa", "exact", "no")]
    s = summarize(items, ["abcx", "ab", "yes", "yes"])
    assert s["per_task"]["ocr"] == {"metric": "cer", "score": pytest.approx(1 / 6), "n": 2}  # 1 edit / 6 chars
    assert s["per_task"]["qa"]["score"] == 0.5
    assert set(s["per_modality"]) == {"vision", "text"}


def test_one_generation_scored_by_several_metrics(tmp_path):
    """``"metric": ["exact", "cer"]`` scores one answer twice; the table labels each metric."""
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"task": "ocr", "text": "q", "answer": "ab12", "metric": ["exact", "cer"]}) + "\n")
    (item,) = read_tasks(f)
    assert item.metrics == ("exact", "cer")
    s = summarize([item, _item("ocr", ("exact", "cer"), "xy")], ["ab13", "xy"])
    assert s["per_task"]["ocr (exact)"] == {"metric": "exact", "score": 0.5, "n": 2}
    assert s["per_task"]["ocr (cer)"]["score"] == pytest.approx(1 / 6)  # one edit over 4 + 2 characters
    for bad in (["exact", "exact"], [], ["exact", "bleu"]):
        f.write_text(json.dumps({"task": "a", "text": "q", "answer": "x", "metric": bad}) + "\n")
        with pytest.raises(MasqError, match="distinct"):
            read_tasks(f)


def test_tasks_file_errors_name_the_line(tmp_path):
    f = tmp_path / "t.jsonl"
    for line, match in ((["{not json"], r"t.jsonl:1: malformed JSON"),
                        ([json.dumps({"task": "a", "text": "q", "answer": "x", "metric": "bleu"})], "metric 'bleu'"),
                        ([json.dumps({"task": "a", "text": "q", "answer": "x", "images": ["nope.png"]})], "not found"),
                        ([json.dumps({"task": "a", "text": "q"})], "'answer' must be a string"),
                        ([json.dumps({"task": "a", "text": "q", "answer": "x", "colour": 1})], "unknown key"),
                        (["# only a comment"], "tasks file has no samples")):
        f.write_text("\n".join(line) + "\n")
        with pytest.raises(MasqError, match=match):
            read_tasks(f)
    with pytest.raises(MasqError, match="tasks file not found"):
        read_tasks(tmp_path / "missing.jsonl")


def test_tiny_omni_frontend_builds_the_generators_inputs(tmp_path):
    """A tasks line through the front end gives the decoder inputs the training data used."""
    from examples.tiny_omni.tasks import write_tasks
    from examples.tiny_omni.train import encode_split
    from masq_jax.families.tiny_omni.frontend import TinyOmniFrontEnd

    path = write_tasks(tmp_path / "tasks", "test", 2)
    items = read_tasks(path)
    assert [it.modality for it in items] == ["vision"] * 2 + ["audio"] * 2 + ["vision+audio"] * 2 + ["text"] * 2
    fe = TinyOmniFrontEnd(CKPT)
    ref = encode_split(str(CKPT), "test", 2)
    for k, task in enumerate(("vision", "audio", "match", "text")):
        for i in range(2):
            it = items[2 * k + i]
            s = fe.encode(it.text, it.images, it.audios)
            np.testing.assert_allclose(s.inputs_embeds, ref[task]["inputs_embeds"][i], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(s.position_ids, ref[task]["position_ids"][:, i])
            np.testing.assert_array_equal(s.modality_ids, ref[task]["modality_ids"][i])
    assert fe.decode([17, 2, 5]) == "7"  # up to <eos>
    with pytest.raises(MasqError, match="not a tiny omni word"):
        fe.encode("what is this")
