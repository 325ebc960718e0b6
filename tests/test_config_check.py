"""`lpr-edge config check` says OK only for a config the car can run: secrets in
camera URLs masked, model names and public keys validated at load, and the state
directory checked in the environment it runs in."""

from __future__ import annotations

import base64
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from edge.config import PROJECT_ROOT, ConfigError, RecognitionConfig, load_config, to_dict

CAMERA_WITH_PASSWORD = (
    '[[cameras]]\nname = "front"\nsource = "rtsp://admin:s3cret@10.0.0.5:554/s1"\n'
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def config_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge", "config", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    return err.value.problems


def test_a_camera_password_is_masked_in_the_effective_config(tmp_path):
    path = write(tmp_path, CAMERA_WITH_PASSWORD)
    result = config_check(path)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert 'source = "rtsp://admin:***@10.0.0.5:554/s1"' in result.stdout
    config = load_config(path, environ={})
    assert to_dict(config)["cameras"][0]["source"] == "rtsp://admin:***@10.0.0.5:554/s1"
    unmasked = to_dict(config, mask_secrets=False)["cameras"][0]["source"]
    assert unmasked == "rtsp://admin:s3cret@10.0.0.5:554/s1"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "ppocr-rec", "platedet.onnx"])
def test_a_detector_that_is_no_manifest_detector_is_named(tmp_path, name):
    (line,) = load_problems(write(tmp_path, f'[recognition]\ndetector = "{name}"\n'))
    assert line.startswith(f"{tmp_path / 'edge.toml'}: 'recognition.detector' expected one of ")
    assert f"got {name!r}" in line


def test_every_detector_choice_is_a_manifest_model():
    with (PROJECT_ROOT / "models" / "manifest.toml").open("rb") as fh:
        manifest = {model["name"] for model in tomllib.load(fh)["model"]}
    choices = typing.get_args(typing.get_type_hints(RecognitionConfig)["detector"])
    assert choices and set(choices) <= manifest


def test_a_public_key_that_is_base64_of_the_wrong_size_is_named_with_its_index(tmp_path):
    good = base64.b64encode(bytes(range(32))).decode()
    path = write(tmp_path, f'[watchlist]\npublic_keys = ["{good}", "AAAA"]\n')
    (line,) = load_problems(path)
    assert line == (
        f"{path}: 'watchlist.public_keys[1]' expected the base64 of a 32-byte Ed25519 "
        "public key (44 characters) or a key file's path, got 'AAAA' (the base64 of 3 bytes)"
    )


def test_public_keys_given_as_base64_or_key_files_load(tmp_path):
    good = base64.b64encode(bytes(range(32))).decode()
    path = write(tmp_path, f'[watchlist]\npublic_keys = ["{good}", "hq.pub", "keys/hq.pem"]\n')
    assert len(load_config(path, environ={}).watchlist.public_keys) == 3


def test_config_check_names_a_key_file_that_cannot_be_read(tmp_path):
    path = write(tmp_path, '[watchlist]\npublic_keys = ["hq.pub"]\n')
    result = config_check(path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "public_keys: 'hq.pub'" in result.stderr and "No such file" in result.stderr


def test_config_check_names_a_state_dir_that_cannot_be_created(tmp_path):
    # A file where a parent folder should be: refused even to root, which the
    # permission bits are not.
    (tmp_path / "blocker").write_text("")
    path = write(tmp_path, '[storage]\nstate_dir = "blocker/lpr-edge"\n')
    load_config(path, environ={})  # the file itself is fine: this is the environment
    result = config_check(path)
    assert result.returncode == 2, result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"lpr-edge: error: {path}: 'storage.state_dir' {tmp_path / 'blocker' / 'lpr-edge'} "
        f"cannot be created: {tmp_path / 'blocker'} is not a directory"
    )


def test_config_check_names_a_state_dir_that_is_a_file(tmp_path):
    (tmp_path / "state").write_text("")
    result = config_check(write(tmp_path, '[storage]\nstate_dir = "state"\n'))
    assert result.returncode == 2
    assert f"'storage.state_dir' {tmp_path / 'state'} is not a directory" in result.stderr


def test_config_check_accepts_a_state_dir_it_could_create(tmp_path):
    result = config_check(write(tmp_path, '[storage]\nstate_dir = "var/new/lpr-edge"\n'))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "var").exists()  # checked, not created
