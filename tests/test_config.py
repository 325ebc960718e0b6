from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge.config import PROJECT_ROOT, ConfigError, dumps_toml, load_config, to_dict

EXAMPLE = PROJECT_ROOT / "config" / "edge.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    config = load_config(None, environ={})
    assert config.vehicle.id == "demo-vehicle"
    assert config.recognition.ocr == "ppocr"
    assert config.recognition.plate_format == "hk"
    assert config.mqtt.host == ""
    assert config.cameras == ()


def test_example_loads_and_documents_every_key():
    config = load_config(EXAMPLE, environ={})
    assert [c.name for c in config.cameras] == ["front-left", "rear-right"]
    with EXAMPLE.open("rb") as fh:
        example = tomllib.load(fh)
    effective = to_dict(config, mask_secrets=False)

    def keys(data, prefix=""):
        out = set()
        for key, value in data.items():
            if isinstance(value, dict):
                out |= keys(value, f"{prefix}{key}.")
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                out |= keys(value[0], f"{prefix}{key}.")
            else:
                out.add(prefix + key)
        return out

    assert keys(example) == keys(effective)
    # The example shows defaults: apart from the cameras, it equals a config without a file.
    defaults = to_dict(load_config(None, environ={}), mask_secrets=False)
    defaults.pop("cameras"), effective.pop("cameras")
    assert effective == defaults


def test_config_is_immutable():
    config = load_config(None, environ={})
    with pytest.raises(AttributeError):
        config.vehicle.id = "x"  # type: ignore[misc]


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, "[recognition]\nmin_confidense = 0.4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert len(err.value.problems) == 1
    line = err.value.problems[0]
    assert str(path) in line and "recognition.min_confidense" in line
    assert "did you mean 'min_confidence'" in line


def test_a_replaced_key_is_named_with_its_successor(tmp_path):
    # decide_reads (a count of agreeing readings) gave way to decide_margin.
    path = write(tmp_path, "[tracking]\ndecide_reads = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    (line,) = err.value.problems
    assert "unknown key 'tracking.decide_reads' (replaced by 'decide_margin'" in line
    assert "did you mean" not in line


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'camera'.*did you mean 'cameras'"):
        load_config(write(tmp_path, '[[camera]]\nname = "a"\n'), environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[mqtt]\nport = "1883"\n', "'mqtt.port' expected an integer, got a string ('1883')"),
        ("[mqtt]\nport = 70000\n", "'mqtt.port' expected a value between 1 and 65535, got 70000"),
        ("[recognition]\nmin_confidence = 1.5\n", "'recognition.min_confidence' expected a value"),
        (
            '[recognition]\nocr = "tesseract"\n',
            "'recognition.ocr' expected one of 'ppocr', 'easyocr'",
        ),
        ('[privacy]\npublish_reads = "yes"\n', "'privacy.publish_reads' expected true or false"),
        ('[recognition]\nproviders = "cpu"\n', "'recognition.providers' expected a list"),
        ("[recognition]\nproviders = [1]\n", "'recognition.providers[0]' expected a string"),
        ('[vehicle]\nid = "car 7/a"\n', "'vehicle.id' expected 1 to 64 ASCII letters"),
        ('[[cameras]]\nname = "a"\n', "'cameras[0].source' is required"),
        ('[[cameras]]\nname="a"\nsource="x"\n[[cameras]]\nname="a"\nsource="y"\n', "used twice"),
        ('[mqtt]\ntopic_prefix = "lpr/#"\n', "'mqtt.topic_prefix' expected a topic"),
        ('[mqtt.tls]\ncert_file = "c.pem"\n', "'mqtt.tls.cert_file' and 'mqtt.tls.key_file'"),
        ("vehicle = 3\n", "[vehicle] expected a table"),
    ],
)
def test_bad_values_are_named(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "[mqtt]\nport = 0\nkeepalive = 1\n[gps]\nsource = 'usb'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert len(err.value.problems) == 3


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[mqtt\n"), environ={})


def test_environment_overrides_secrets_and_scalars(tmp_path):
    path = write(tmp_path, '[mqtt]\nhost = "hq.example"\npassword = "in-file"\n')
    env = {
        "LPR_EDGE_MQTT_PASSWORD": "from-env",
        "LPR_EDGE_MQTT_PORT": "8883",
        "LPR_EDGE_MQTT_TLS_ENABLED": "true",
        "LPR_EDGE_RECOGNITION_PROVIDERS": "cuda, cpu",
    }
    config = load_config(path, environ=env)
    assert config.mqtt.password == "from-env"
    assert config.mqtt.port == 8883
    assert config.mqtt.tls.enabled is True
    assert config.recognition.providers == ("cuda", "cpu")
    assert config.mqtt.host == "hq.example"


def test_bad_environment_override_names_the_variable():
    with pytest.raises(ConfigError, match="'LPR_EDGE_MQTT_PORT' expected a number"):
        load_config(None, environ={"LPR_EDGE_MQTT_PORT": "many"})
    with pytest.raises(ConfigError, match="'LPR_EDGE_MQTT_PORT' expected a value between"):
        load_config(None, environ={"LPR_EDGE_MQTT_PORT": "0"})


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    path = write(tmp_path, '[storage]\nstate_dir = "state"\n[recognition]\nmodels_dir = "m"\n')
    config = load_config(path, environ={})
    assert config.state_dir == tmp_path / "state"
    assert config.models_dir == tmp_path / "m"


def test_dump_masks_secrets_and_round_trips():
    config = load_config(None, environ={"LPR_EDGE_MQTT_PASSWORD": "hunter2"})
    text = dumps_toml(to_dict(config))
    assert "hunter2" not in text and 'password = "********"' in text
    unmasked = dumps_toml(to_dict(config, mask_secrets=False))
    assert tomllib.loads(unmasked) == to_dict(config, mask_secrets=False)


def test_a_camera_name_hq_would_refuse_is_refused_at_load_naming_the_key(tmp_path: Path):
    path = write(
        tmp_path,
        '[[cameras]]\nname = "front left\\u001b[2J"\nsource = "rtsp://10.0.0.5/s1"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "'cameras[0].name' expected 1 to 64 ASCII letters" in str(caught.value)
    ok = write(tmp_path, '[[cameras]]\nname = "front-left.1"\nsource = "rtsp://10.0.0.5/s1"\n')
    assert load_config(ok, environ={}).cameras[0].name == "front-left.1"
