"""omni-SmolLM2's model: the converted LLM is SmolLM2 (against transformers, real text), the media
placeholders agree with the Thinker's positions, features and encoders are what they claim, and the
frozen-LLM training step lowers the loss."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.omni_smollm2 import data
from masq_jax.families.omni_smollm2 import model as M
from examples.omni_smollm2 import prompts as P
from examples.omni_smollm2 import train as T
from masq_jax.models import decoder
from tests.models.test_gguf import needs_smollm2, perplexity

pytestmark = [needs_smollm2, pytest.mark.filterwarnings("ignore")]


def test_converted_llm_gives_smollm2s_logits_on_real_text(smollm2):
    import torch

    ids, tm, model, _ = smollm2
    ids = ids[:, :192]
    cfg = M.omni_config(model.config)
    assert cfg.is_multimodal and cfg.uses_mrope and cfg.image_token_id == M.TOKENS["image_token_id"]
    with torch.no_grad():
        ref = tm(torch.tensor(ids)).logits.double().numpy()
    got = np.asarray(decoder.forward(cfg, model.params, input_ids=jnp.asarray(ids)), np.float64)  # [3,B,S] positions
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-3
    assert abs(perplexity(got, ids) - perplexity(ref, ids)) / perplexity(ref, ids) < 1e-3


def test_placeholders_follow_the_thinkers_positions(smollm2):
    cfg = M.omni_config(smollm2[2].config)
    ids = np.asarray([list(P.prompt_ids("match")) + [P.IM_END]])
    assert (ids == M.TOKENS["image_token_id"]).sum() == M.N_VISION and (ids == M.TOKENS["audio_token_id"]).sum() == M.N_AUDIO
    pos = M.positions(cfg, ids)[:, 0]
    img = pos[:, ids[0] == M.TOKENS["image_token_id"]]
    base = img.min(axis=1, keepdims=True)
    assert np.array_equal(img - base, np.stack([np.zeros(M.N_VISION, int), np.repeat(np.arange(M.GRID[0]), M.GRID[1]),
                                                np.tile(np.arange(M.GRID[1]), M.GRID[0])]))
    mids = M.modality_ids(ids)[0]
    assert (mids == 1).sum() == M.N_VISION and (mids == 2).sum() == M.N_AUDIO


def test_log_mel_of_a_tone_peaks_at_its_frequency():
    t = np.arange(M.SAMPLE_RATE) / M.SAMPLE_RATE
    mel = M.log_mel(np.sin(2 * np.pi * 1000 * t))
    assert mel.shape == (M.N_FRAMES, M.N_MELS)
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    centres = hz(np.linspace(0, 2595 * np.log10(1 + 8000 / 700), M.N_MELS + 2))[1:-1]
    assert abs(centres[int(np.argmax(mel[50]))] - 1000) < 80
    assert mel[150:].max() < mel[50].max() - 5  # past the 1 s tone: padding, far quieter


def test_encoders_fill_exactly_the_placeholders(smollm2):
    params = smollm2[2].params
    enc = M.init_encoders(jax.random.PRNGKey(0), 576)
    items = data.examples("match", "train", 2, seed=0)
    b = P.teacher_forced(M.omni_config(smollm2[2].config), items)
    e = M.assemble(params, enc, jnp.asarray(b.ids), jnp.asarray(b.patches), jnp.asarray(b.mel))
    text = M.modality_ids(b.ids) == 0
    np.testing.assert_array_equal(np.asarray(e)[text], np.asarray(params["embed"])[b.ids[text]])
    assert b.targets.shape == b.mask.shape == (2, P.MAX_ANSWER["match"]) and b.prompt_len == len(P.prompt_ids("match"))
    assert P.tokenizer().decode([t for t, m in zip(b.targets[0], b.mask[0]) if m]) == items[0].answer + "<|im_end|>"


@pytest.mark.slow  # a training run: -m slow (keeps the default suite inside CI's budget)
def test_frozen_llm_training_steps_lower_the_loss(smollm2):
    """Three steps on one repeated batch, SmolLM2's first two layers (real weights): the encoders
    learn, the LLM's parameters are not even an argument of the gradient."""
    model = smollm2[2]
    cfg = M.omni_config(dataclasses.replace(model.config, num_layers=2))
    llm = {**model.params, "layers": jax.tree.map(lambda a: a[:2], model.params["layers"])}
    enc = M.init_encoders(jax.random.PRNGKey(1), cfg.hidden_size)
    opt = T.optimizer(100, 3e-3)
    state = opt.init({k: v for k, v in enc.items() if k != "heads"})
    batches = [T.as_arrays(P.teacher_forced(cfg, data.examples(t, "train", 2, seed=0))) for t in ("asr", "match")]
    run = T.make_step(cfg, opt, tuple(len(P.prompt_ids(t)) for t in ("asr", "match")))
    losses = []
    for _ in range(4):
        enc, state, loss, _ = run(enc, state, llm, batches)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_encoders_round_trip_through_their_file(tmp_path):
    from masq_jax.families.omni_smollm2.checkpoint import load_encoders, save_encoders
    from masq_jax.errors import MasqError

    enc = M.init_encoders(jax.random.PRNGKey(3), 576)
    save_encoders(tmp_path / "encoders.safetensors", enc)
    back = load_encoders(tmp_path / "encoders.safetensors")
    assert back["heads"] == enc["heads"]
    for a, b in zip(jax.tree.leaves({k: v for k, v in enc.items() if k != "heads"}),
                    jax.tree.leaves({k: v for k, v in back.items() if k != "heads"})):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(MasqError, match="not an omni-SmolLM2 encoders file"):
        load_encoders(tmp_path / "bad.safetensors")


def test_task_calibset_and_its_activation_ranges(smollm2):
    """The prompts as a CalibSet (cut after each answer) and the per-modality ranges over 2 layers."""
    from examples.omni_smollm2.calibset import task_calibset
    from masq_jax.eval.ranges import activation_ranges, gap_summary

    model = smollm2[2]
    cfg = M.omni_config(dataclasses.replace(model.config, num_layers=2))
    llm = {**model.params, "layers": jax.tree.map(lambda a: a[:2], model.params["layers"])}
    enc = M.init_encoders(jax.random.PRNGKey(0), 576)
    cs = task_calibset(cfg, llm, enc, "calib", 1)
    assert len(cs) == 3 and cs.token_counts()["vision"] == 2 * M.N_VISION and cs.token_counts()["audio"] == 2 * M.N_AUDIO
    ocr_answer = data.examples("ocr", "calib", 1, 0)[0].answer
    assert len(cs[0].modality_ids) == len(P.prompt_ids("ocr")) + len(P._ids(ocr_answer)) + 1
    table = activation_ranges(cfg, llm, cs)
    assert set(table) == {"qkv", "o", "gate_up", "down"} and all(len(rows) == 2 for rows in table.values())
    summary = gap_summary(table)
    assert all(np.isfinite(v["vision"]) and v["audio"] > 0 for v in summary.values())
