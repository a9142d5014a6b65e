"""Every stored format carries a version; another version is a clear error naming both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import squeezer
from squeezer import compress
from squeezer.artifact import format as artifact_format
from squeezer.compress.model import SPEC_VERSION
from squeezer.errors import ArtifactError, ConfigError
from squeezer.pipeline import checkpoint
from squeezer.pipeline.record import VERSION as RECORD_VERSION
from squeezer.pipeline.record import RunRecord
from squeezer.recipe.configs import RECIPE_VERSION
from squeezer.recipe.loader import recipe_from_dict, recipe_to_dict

RECIPE = {
    "model": {"factory": "squeezer.examples.digits:make_model"},
    "data": {"factory": "squeezer.examples.digits:make_loaders"},
    "stages": [{"type": "train", "epochs": 1}],
}


def test_a_recipe_records_its_version_and_refuses_another() -> None:
    assert recipe_to_dict(recipe_from_dict(RECIPE))["version"] == RECIPE_VERSION
    assert recipe_from_dict({**RECIPE, "version": RECIPE_VERSION}).version == RECIPE_VERSION
    with pytest.raises(ConfigError, match=rf"^r.toml: version: the recipe has format version 2, this squeezer "
                                          rf"reads version {RECIPE_VERSION}$"):
        recipe_from_dict({**RECIPE, "version": 2}, source="r.toml")


def test_the_compression_structure_records_its_version_and_refuses_another() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    compress.attach(model)
    spec = compress.spec(model)
    assert spec["version"] == SPEC_VERSION
    checkpoint.check_spec(spec)
    with pytest.raises(ValueError, match=rf"spec: format version 9, this squeezer reads version {SPEC_VERSION}"):
        checkpoint.check_spec({**spec, "version": 9})
    with pytest.raises(ArtifactError, match=rf"format version 9, this squeezer reads version {SPEC_VERSION}"):
        compress.restore(nn.Sequential(nn.Linear(4, 4)), {**spec, "version": 9}, squeezer.load_registry())
    unversioned = {k: v for k, v in spec.items() if k != "version"}  # written before versions existed
    checkpoint.check_spec(unversioned)
    fresh = nn.Sequential(nn.Linear(4, 4))
    compress.restore(fresh, unversioned, squeezer.load_registry())
    assert [p for p, _ in compress.compressed_weights(fresh)] == ["0.weight"]


def test_the_run_record_round_trips_and_refuses_another_version() -> None:
    record = RunRecord(targets=["0.weight"], bits={"0.weight": 4}, dense_accuracy=0.9,
                       stage_accuracy={"0": 0.9})
    doc = record.to_json()
    assert doc["version"] == RECORD_VERSION
    assert RunRecord.from_json(doc) == record
    with pytest.raises(ValueError, match=rf"records: format version 3, this squeezer reads version {RECORD_VERSION}"):
        RunRecord.from_json({**doc, "version": 3})
    with pytest.raises(ValueError, match=r"records.bits\['0.weight'\] must be a non-negative integer"):
        RunRecord.from_json({**doc, "bits": {"0.weight": -1}})
    # keys older squeezers wrote and no longer read are dropped, not run
    assert RunRecord.from_json({**doc, "layers": [], "model_factory": {"factory": "os:system"}}) == record


def _v1_artifact(path: Path) -> Path:
    """An artifact as squeezer wrote it before format version 2: one tensor per part, the record
    as plain JSON in the metadata (a crafted file of that shape; the reader stops at the version)."""
    doc = {"format": "squeezer-artifact", "version": 1, "info": {}, "float_dtype": "float32", "layers": [],
           "state": [{"name": "0.bias", "shape": [4], "dtype": "float32"}],
           "checksum": {"algorithm": "sha256", "digest": "0" * 64}}
    save_file({"state/0.bias": torch.zeros(4)}, str(path), metadata={"squeezer": json.dumps(doc)})
    return path


@pytest.mark.parametrize("version", [1, 3])
def test_an_artifact_of_another_version_is_refused_naming_both(tmp_path: Path, version: int) -> None:
    assert artifact_format.FORMAT_VERSION == 2
    path = _v1_artifact(tmp_path / "m.safetensors")
    if version != 1:
        header = {"format": "squeezer-artifact", "version": version, "sha256": "0" * 64}
        path.write_bytes(artifact_format.container(b"\0", header))
    message = (f"{path}: artifact format version {version} is not supported (this squeezer reads version 2)"
               + ("; re-export it from its run's checkpoint with this squeezer (squeezer export RUN_DIR --out FILE)"
                  if version == 1 else ""))
    for call in (squeezer.inspect, lambda p: squeezer.load(p, nn.Sequential(nn.Linear(4, 4)))):
        with pytest.raises(ArtifactError) as exc:
            call(path)
        assert str(exc.value) == message
