"""omni-SmolLM2's task prompts as a ``CalibSet`` (inputs_embeds with the encoders applied, Thinker
positions, modality ids): what calibration and the activation-range measurement run on."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from examples.omni_smollm2 import data
from masq_jax.families.omni_smollm2 import model as M
from examples.omni_smollm2 import prompts as P


def task_calibset(cfg, llm: dict, enc: dict, split: str, n_per_task: int, seed: int = 0,
                  tasks: tuple[str, ...] = data.TASKS):
    """Teacher-forced prompts + answers of ``split`` (cut after each answer's ``<|im_end|>``)."""
    from masq_jax.calib import CalibSet
    from masq_jax.calib.sample import make_sample

    samples = []
    for task in tasks:
        b = P.teacher_forced(cfg, data.examples(task, split, n_per_task, seed))
        e = np.asarray(M.assemble(llm, enc, jnp.asarray(b.ids), None if b.patches is None else jnp.asarray(b.patches),
                                  None if b.mel is None else jnp.asarray(b.mel)), np.float32)
        mids = M.modality_ids(b.ids)
        for i in range(len(b.ids)):
            n = b.prompt_len + int(b.mask[i].sum())
            samples.append(make_sample(mids[i, :n], b.positions[:, i, :n], inputs_embeds=e[i, :n], index=len(samples)))
    return CalibSet(samples, {"source": "omni-smollm2", "split": split, "seed": seed, "tasks": list(tasks),
                              "per_task": n_per_task})
