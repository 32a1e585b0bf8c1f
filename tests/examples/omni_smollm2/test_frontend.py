"""omni-SmolLM2 as a checkpoint directory: it loads as SmolLM2 in the Thinker layout, its front end
builds the inputs training used from a tasks file's media, and ``masq eval``'s harness generates
and scores through it (real SmolLM2 weights, random encoders: the plumbing, not the accuracy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.omni_smollm2 import data
from masq_jax.families.omni_smollm2 import model as M
from examples.omni_smollm2 import prompts as P
from masq_jax.families.omni_smollm2.checkpoint import write_checkpoint
from examples.omni_smollm2.tasks import write_tasks
from masq_jax.eval.tasks import read_tasks
from tests.models.test_gguf import needs_smollm2

pytestmark = [needs_smollm2, pytest.mark.filterwarnings("ignore")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    enc = M.init_encoders(jax.random.PRNGKey(7), 576)
    return write_checkpoint(tmp_path_factory.mktemp("omni") / "omni-smollm2", enc, steps=0), enc


def test_checkpoint_dir_loads_as_smollm2_in_the_thinker_layout(ckpt, smollm2):
    from masq_jax.loading import load, load_checkpoint

    cfg, params = load_checkpoint(str(ckpt[0]))
    assert cfg.uses_mrope and cfg.audio_token_id == M.TOKENS["audio_token_id"]
    np.testing.assert_array_equal(np.asarray(params["embed"]), np.asarray(smollm2[2].params["embed"]))
    assert load(ckpt[0]).config.mrope_section == M.MROPE_SECTION


def test_frontend_builds_the_training_inputs_from_the_tasks_file(ckpt, smollm2, tmp_path):
    from masq_jax.frontend import frontend_for

    path = write_tasks(tmp_path / "tasks", "test", 1, seed=3)
    items = read_tasks(path)
    assert [it.task for it in items] == list(data.EVAL_TASKS)
    assert [it.modality for it in items] == ["vision", "audio", "vision+audio", "text"]
    assert items[0].metrics == ("exact", "cer") and items[1].metrics == ("wer",)
    fe = frontend_for(ckpt[0])
    cfg, params = M.omni_config(smollm2[2].config), smollm2[2].params
    for it in items[:3]:
        b = P.teacher_forced(cfg, data.examples(it.task, "test", 1, seed=3))
        want = M.assemble(params, ckpt[1], jnp.asarray(b.ids), None if b.patches is None else jnp.asarray(b.patches),
                          None if b.mel is None else jnp.asarray(b.mel))[0, : b.prompt_len]
        s = fe.encode(it.text, it.images, it.audios)
        np.testing.assert_allclose(s.inputs_embeds, np.asarray(want), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(s.position_ids, b.positions[:, 0, : b.prompt_len])
    copy = data.examples("copy", "test", 1, seed=3)[0]
    assert items[3].text == f'Copy this text exactly: "{copy.label}"' and items[3].answer == copy.label
    assert fe.decode(P._ids("yes") + [P.IM_END] + P._ids("no")) == "yes"


def test_tasks_are_generated_and_scored_through_the_frontend(ckpt, tmp_path):
    """One example per task through ``masq eval``'s harness; the copy task is SmolLM2's own answer."""
    from masq_jax.eval.tasks import evaluate_tasks
    from masq_jax.frontend import frontend_for
    from masq_jax.loading import load

    path = write_tasks(tmp_path / "tasks", "test", 1, seed=3)
    res = evaluate_tasks({"fp": load(ckpt[0])}, path, frontend_for(ckpt[0]), max_new_tokens=12, batch_size=4)
    per = res["results"]["fp"]["per_task"]
    assert set(per) == {"ocr (exact)", "ocr (cer)", "asr", "match", "copy"}
    assert all(np.isfinite(v["score"]) and v["n"] == 1 for v in per.values())
    assert [e["modality"] for e in res["examples"]] == ["vision", "audio", "vision+audio", "text"]


@pytest.mark.slow  # a training run: -m slow (keeps the default suite inside CI's budget)
def test_training_starts_from_and_publishes_to_a_checkpoint_dir(ckpt, tmp_path):
    """``--init`` takes the committed encoders and their step count, ``--publish`` writes them back
    (``--minutes 0``: export only), so training continues across machines."""
    from examples.omni_smollm2 import train
    from masq_jax.families.omni_smollm2.checkpoint import ENCODERS, checkpoint_info, load_encoders, write_checkpoint

    src = write_checkpoint(tmp_path / "src", ckpt[1], steps=5)
    assert train.main(["--out", str(tmp_path / "run"), "--init", str(src), "--publish", str(tmp_path / "pub"),
                       "--minutes", "0"]) == 0
    assert checkpoint_info(tmp_path / "pub")["steps"] == 5
    back = load_encoders(tmp_path / "pub" / ENCODERS)
    np.testing.assert_array_equal(np.asarray(back["audio"]["conv1"]["w"]), np.asarray(ckpt[1]["audio"]["conv1"]["w"]))
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "run2"), "--init", str(tmp_path), "--minutes", "0"])
