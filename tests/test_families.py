"""Model families behind one registry: every kind of spec finds its family, dispatch through
``loading`` and ``frontend`` goes to it, an artefact's metadata is read in one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from masq_jax import loading
from masq_jax.artifact.info import ArtifactInfo, read_info
from masq_jax.errors import ArtifactError, MasqError
from masq_jax.families import FAMILIES, ModelFamily, find, names
from masq_jax.frontend import frontend_for
from masq_jax.models.embedded import smollm2_gguf_path

ROOT = Path(__file__).resolve().parents[1]
TINY, OMNI = ROOT / "checkpoints" / "tiny-omni", ROOT / "checkpoints" / "omni-smollm2"


def fake_artifact(path: Path, **qc) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "masq-jax", **qc}}))
    return path


def test_every_family_is_listed_once_in_match_order():
    assert names() == ("smollm2", "qwen2.5-0.5b", "toy", "artifact", "omni_smollm2", "tiny_omni", "gguf", "hf")
    assert all(isinstance(f, ModelFamily) and f.summary for f in FAMILIES)


def test_each_kind_of_spec_finds_its_family(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    art = fake_artifact(tmp_path / "art", source_model="toy:tiny")
    cases = {None: "smollm2", "smollm2": "smollm2", "toy:tiny": "toy", str(art): "artifact", str(OMNI): "omni_smollm2",
             str(TINY): "tiny_omni", str(gguf): "gguf", str(hf): "hf"}
    for spec, family in cases.items():
        if family == "smollm2" and smollm2_gguf_path() is None:
            continue
        assert find(spec)[0].name == family, spec
    assert find(None)[1] == str(smollm2_gguf_path()) or smollm2_gguf_path() is None
    assert loading.source_of("toy:tiny") == "toy:tiny"
    assert loading.source_of(str(gguf)) == str(gguf.absolute())
    with pytest.raises(MasqError, match="no such file or directory"):
        find(tmp_path / "nope")
    with pytest.raises(MasqError, match="toy models are toy:omni3b"):
        find("toy:nope")


def test_an_artefacts_front_end_and_reference_are_its_source_models(tmp_path):
    art = fake_artifact(tmp_path / "a", source_model=str(TINY))
    assert loading.reference_of(art) == str(TINY)
    assert type(frontend_for(art)).__name__ == "TinyOmniFrontEnd"
    bare = fake_artifact(tmp_path / "b")
    with pytest.raises(MasqError, match="does not name its source model; pass --reference"):
        frontend_for(bare)
    with pytest.raises(MasqError, match="random toy decoders have no tokenizer"):
        frontend_for(fake_artifact(tmp_path / "c", source_model="toy:tiny"))


def test_artifact_metadata_is_typed_and_chooses_the_runtime_layout(tmp_path):
    tied = ArtifactInfo({"settings": {"tie_smoothing": True}, "per_modality_weights": False, "source_model": "x"})
    assert tied.tied_smoothing and tied.source_model == "x"
    assert tied.wants_merge(None) and not tied.wants_merge(False)
    untied = ArtifactInfo({"settings": {"tie_smoothing": False}})
    assert not untied.wants_merge(None) and untied.wants_merge(True) and untied.source_model is None
    per_modality = ArtifactInfo({"settings": {"tie_smoothing": True}, "per_modality_weights": True})
    assert not per_modality.wants_merge(None)
    with pytest.raises(ArtifactError, match="per-modality weights cannot run merged GEMMs"):
        per_modality.wants_merge(True)
    with pytest.raises(ArtifactError, match="merge must be None, True or False"):
        untied.wants_merge("yes")
    assert read_info(fake_artifact(tmp_path / "a", method="rtn")).method == "rtn"
    with pytest.raises(ArtifactError, match="not a masq-jax artefact"):
        read_info(tmp_path)


def test_loading_dispatches_to_the_family():
    cfg, params = loading.load_checkpoint("toy:tiny")
    assert cfg.num_layers == 2 and params["layers"]["q_proj"]["w"].shape[0] == 2
    cfg, _ = loading.load_checkpoint(str(TINY))
    assert cfg.arch == "qwen2_5_omni_thinker" and cfg.is_multimodal
    assert type(frontend_for(TINY)).__name__ == "TinyOmniFrontEnd"
