"""The vehicle install: systemd/install.sh and uninstall.sh staged under DESTDIR (no
root, no account, no systemctl: checked with stand-ins on PATH that record any call),
the `make install` target, and the unit file checked by `systemd-analyze verify`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import PROJECT_ROOT, load_config, to_dict

INSTALL = PROJECT_ROOT / "systemd" / "install.sh"
UNINSTALL = PROJECT_ROOT / "systemd" / "uninstall.sh"
UNIT = PROJECT_ROOT / "systemd" / "lpr-edge.service"
# Commands that change the system rather than files: never run when staging.
SYSTEM_COMMANDS = ("useradd", "userdel", "groupadd", "systemctl", "chown", "getent")


@pytest.fixture
def stage(tmp_path: Path) -> dict:
    """A staging root, stand-ins for the system commands, and the environment."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    calls = tmp_path / "system-calls.log"
    for name in SYSTEM_COMMANDS:
        tool = fake_bin / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 0\n')
        tool.chmod(0o755)
    models_from = tmp_path / "models-from"
    models_from.mkdir()
    (models_from / "platedet.onnx").write_bytes(b"a model")  # named in the manifest
    (models_from / "unrelated.pth").write_bytes(b"not in the manifest")
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "DESTDIR": str(tmp_path / "root"),
        "SKIP_VENV": "1",
        "MODELS_FROM": str(models_from),
    }
    for name in ("PREFIX", "WHEELS", "PURGE", "START"):
        env.pop(name, None)
    return {"root": tmp_path / "root", "env": env, "calls": calls, "tmp": tmp_path}


def run(script: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60
    )


def system_calls(stage: dict) -> list[str]:
    calls = stage["calls"]
    return calls.read_text().splitlines() if calls.exists() else []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values in order (systemd allows a key more than once)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


# --- install.sh, staged ----------------------------------------------------------------------


def test_staged_install_lays_out_everything_and_touches_nothing_else(stage):
    result = run(INSTALL, stage["env"])
    assert result.returncode == 0, result.stderr
    assert system_calls(stage) == [], "no system command may run when staging"
    out = result.stdout
    for expected in (
        "would run: groupadd --system video",
        "would run: groupadd --system dialout",
        "would run: useradd --system --user-group --home-dir /var/lib/lpr-edge",
        "would run: chown root:lpr-edge /etc/lpr-edge",
        "would run: chown lpr-edge:lpr-edge /var/lib/lpr-edge",
        "would run: systemctl daemon-reload",
        "would run: systemctl enable lpr-edge.service",
        f"would run: {stage['root']}/opt/lpr-edge/venv/bin/lpr-edge models fetch "
        f"--models-dir {stage['root']}/opt/lpr-edge/models",
    ):
        assert expected in out, f"{expected!r} not in:\n{out}"
    root = stage["root"]
    unit = root / "etc/systemd/system/lpr-edge.service"
    assert unit.read_text() == UNIT.read_text()
    assert mode(unit) == 0o644
    assert mode(root / "etc/lpr-edge") == 0o750
    assert mode(root / "etc/lpr-edge/edge.toml") == 0o640
    assert mode(root / "etc/lpr-edge/lpr-edge.env") == 0o600
    assert "LPR_EDGE_MQTT_PASSWORD" in (root / "etc/lpr-edge/lpr-edge.env").read_text()
    assert mode(root / "var/lib/lpr-edge") == 0o750
    models = root / "opt/lpr-edge/models"
    assert (models / "manifest.toml").read_bytes() == (
        PROJECT_ROOT / "models/manifest.toml"
    ).read_bytes()
    assert (models / "platedet.onnx").read_bytes() == b"a model"
    assert not (models / "unrelated.pth").exists(), "only the manifest's files are copied"
    assert (root / "opt/lpr-edge/share/edge.example.toml").is_file()
    link = root / "usr/local/bin/lpr-edge"
    assert link.is_symlink() and os.readlink(link) == "/opt/lpr-edge/venv/bin/lpr-edge"
    assert not (root / "opt/lpr-edge/venv").exists(), "SKIP_VENV=1"


def test_the_installed_configuration_is_the_example_with_the_service_paths(stage):
    assert run(INSTALL, stage["env"]).returncode == 0
    installed = load_config(stage["root"] / "etc/lpr-edge/edge.toml", environ={})
    example = load_config(PROJECT_ROOT / "config/edge.example.toml", environ={})
    assert installed.storage.state_dir == "/var/lib/lpr-edge"
    assert installed.recognition.models_dir == "/opt/lpr-edge/models"
    assert installed.state_dir == Path("/var/lib/lpr-edge")
    assert installed.models_dir == Path("/opt/lpr-edge/models")
    mine, theirs = to_dict(installed), to_dict(example)
    for data in (mine, theirs):
        del data["storage"]["state_dir"], data["recognition"]["models_dir"]
    assert mine == theirs, "nothing else differs from the example"


def test_the_unit_and_configuration_agree_on_the_paths():
    settings = unit_settings(UNIT.read_text())
    env = dict(v.split("=", 1) for v in settings["Service.Environment"])
    assert settings["Service.StateDirectory"] == ["lpr-edge"]
    assert env["LPR_EDGE_STORAGE_STATE_DIR"] == "/var/lib/lpr-edge"
    assert settings["Service.ReadWritePaths"] == ["/var/lib/lpr-edge"]
    assert env["LPR_EDGE_MODELS_DIR"] == "/opt/lpr-edge/models"
    assert settings["Service.ExecStart"] == [
        "/opt/lpr-edge/venv/bin/lpr-edge run --config /etc/lpr-edge/edge.toml"
    ]
    assert settings["Service.ConfigurationDirectory"] == ["lpr-edge"]


def test_a_second_install_keeps_the_configuration(stage):
    assert run(INSTALL, stage["env"]).returncode == 0
    config = stage["root"] / "etc/lpr-edge/edge.toml"
    secrets = stage["root"] / "etc/lpr-edge/lpr-edge.env"
    config.write_text('[vehicle]\nid = "car-17"\n')
    secrets.write_text("LPR_EDGE_MQTT_PASSWORD=s3cret\n")
    result = run(INSTALL, stage["env"])
    assert result.returncode == 0, result.stderr
    assert config.read_text() == '[vehicle]\nid = "car-17"\n'
    assert secrets.read_text() == "LPR_EDGE_MQTT_PASSWORD=s3cret\n"
    assert "kept the existing /etc/lpr-edge/edge.toml" in result.stdout
    assert system_calls(stage) == []


def test_prefix_is_carried_into_the_unit_and_configuration(stage):
    env = {**stage["env"], "PREFIX": "/opt/lpr-test"}
    result = run(INSTALL, env)
    assert result.returncode == 0, result.stderr
    unit = unit_settings((stage["root"] / "etc/systemd/system/lpr-edge.service").read_text())
    assert unit["Service.ExecStart"][0].startswith("/opt/lpr-test/venv/bin/lpr-edge run ")
    assert "LPR_EDGE_MODELS_DIR=/opt/lpr-test/models" in unit["Service.Environment"]
    config = load_config(stage["root"] / "etc/lpr-edge/edge.toml", environ={})
    assert config.recognition.models_dir == "/opt/lpr-test/models"
    assert (stage["root"] / "opt/lpr-test/models/manifest.toml").is_file()


def test_wheels_make_the_models_step_offline(stage):
    wheels = stage["tmp"] / "wheels"
    wheels.mkdir()
    result = run(INSTALL, {**stage["env"], "WHEELS": str(wheels)})
    assert result.returncode == 0, result.stderr
    assert f"models fetch --models-dir {stage['root']}/opt/lpr-edge/models --wheels {wheels}" in (
        result.stdout
    )
    missing = run(INSTALL, {**stage["env"], "WHEELS": str(stage["tmp"] / "nowhere")})
    assert missing.returncode != 0 and "is not a folder" in missing.stderr


@pytest.fixture
def scripts_any_user_can_read() -> Iterator[Path]:
    """A copy of systemd/install.sh and lib.sh in a folder every user can reach.

    For running them as a plain user from a root test run: the clone, and pytest's
    tmp_path (under /tmp/pytest-of-root), may lie in folders only their owner can
    enter (mode 0700, as `mktemp -d` makes), where that user could not read them."""
    bases = [Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")]
    base = next((b for b in bases if b.is_dir() and _any_user_can_enter(b)), None)
    if base is None:
        pytest.skip(f"no temporary folder that every user can enter among {bases}")
    copy = Path(tempfile.mkdtemp(prefix="lpr-edge-install-test-", dir=base))
    try:
        copy.chmod(0o755)
        (copy / "systemd").mkdir(mode=0o755)
        for script in (INSTALL, PROJECT_ROOT / "systemd" / "lib.sh"):
            target = copy / "systemd" / script.name
            shutil.copyfile(script, target)
            target.chmod(0o644)
        yield copy / "systemd" / INSTALL.name
    finally:
        shutil.rmtree(copy)


def _any_user_can_enter(folder: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (folder, *folder.parents))


def test_without_destdir_it_needs_root(stage, scripts_any_user_can_read):
    env = {k: v for k, v in stage["env"].items() if k != "DESTDIR"}
    command = ["bash", str(INSTALL)]
    cwd = None
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root and setpriv is missing: cannot drop to a plain user")
        # As the plain user the script must be readable wherever the clone lies: the copy.
        command = ["bash", str(scripts_any_user_can_read)]
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        cwd = scripts_any_user_can_read.parent
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr == (
        "lpr-edge install: error: run as root (sudo make install), "
        "or set DESTDIR= to stage the files in a folder\n"
    )
    assert system_calls(stage) == []


def test_help_describes_the_settings():
    result = run(INSTALL, dict(os.environ), "--help")
    assert result.returncode == 0
    for word in ("WHEELS=", "DESTDIR=", "SKIP_VENV=", "--prepare-wheels"):
        assert word in result.stdout
    assert run(INSTALL, dict(os.environ), "--bogus").returncode != 0


# --- uninstall.sh, staged ------------------------------------------------------------------


def test_staged_uninstall_keeps_configuration_and_data(stage):
    assert run(INSTALL, stage["env"]).returncode == 0
    root = stage["root"]
    (root / "var/lib/lpr-edge/outbox.sqlite").write_bytes(b"undelivered hits")
    result = run(UNINSTALL, stage["env"])
    assert result.returncode == 0, result.stderr
    assert "would run: systemctl disable --now lpr-edge.service" in result.stdout
    assert "would run: systemctl daemon-reload" in result.stdout
    assert "userdel" not in result.stdout
    assert not (root / "etc/systemd/system/lpr-edge.service").exists()
    assert not (root / "opt/lpr-edge").exists()
    assert not (root / "usr/local/bin/lpr-edge").is_symlink()
    assert (root / "etc/lpr-edge/edge.toml").is_file()
    assert (root / "var/lib/lpr-edge/outbox.sqlite").read_bytes() == b"undelivered hits"
    assert system_calls(stage) == []
    again = run(UNINSTALL, stage["env"])
    assert again.returncode == 0, "uninstalling twice is not an error"


def test_staged_purge_removes_configuration_data_and_user(stage):
    assert run(INSTALL, stage["env"]).returncode == 0
    root = stage["root"]
    (root / "var/lib/lpr-edge/outbox.sqlite").write_bytes(b"undelivered hits")
    result = run(UNINSTALL, {**stage["env"], "PURGE": "1"})
    assert result.returncode == 0, result.stderr
    assert "would run: userdel lpr-edge" in result.stdout
    assert "hits not yet sent to HQ are lost" in result.stdout
    for gone in ("etc/lpr-edge", "var/lib/lpr-edge", "opt/lpr-edge"):
        assert not (root / gone).exists(), gone
    assert system_calls(stage) == []


def test_uninstall_refuses_a_prefix_that_is_not_an_installation(stage):
    victim = stage["root"] / "usr/share"
    victim.mkdir(parents=True)
    (victim / "precious").write_text("x")
    result = run(UNINSTALL, {**stage["env"], "PREFIX": "/usr/share"})
    assert result.returncode != 0
    assert "does not look like an lpr-edge installation" in result.stderr
    assert (victim / "precious").exists()


def test_make_install_and_uninstall_pass_the_settings_through(stage):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    env = {k: v for k, v in stage["env"].items() if k not in ("DESTDIR", "SKIP_VENV")}
    destdir = f"DESTDIR={stage['root']}"
    install = subprocess.run(
        ["make", "-s", "install", destdir, "SKIP_VENV=1"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert install.returncode == 0, install.stderr
    assert (stage["root"] / "etc/systemd/system/lpr-edge.service").is_file()
    uninstall = subprocess.run(
        ["make", "-s", "uninstall", destdir, "PURGE=1"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert uninstall.returncode == 0, uninstall.stderr
    assert not (stage["root"] / "etc/lpr-edge").exists()
    assert system_calls(stage) == []


@pytest.mark.parametrize("script", [INSTALL, UNINSTALL], ids=lambda p: p.name)
def test_scripts_pass_bash_n_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck") is None:
        return
    # -x follows the shared systemd/lib.sh the scripts source.
    result = subprocess.run(
        ["shellcheck", "-x", "-P", "SCRIPTDIR", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(
    os.environ.get("LPR_EDGE_TEST_INSTALL_VENV") != "1",
    reason="builds the real virtual environment (about 30 s with a warm pip cache, "
    "network otherwise); set LPR_EDGE_TEST_INSTALL_VENV=1 to run it",
)
def test_staged_install_with_the_virtual_environment(stage):
    env = {k: v for k, v in stage["env"].items() if k != "SKIP_VENV"}
    env["MODELS_FROM"] = str(PROJECT_ROOT / "models")
    result = run(INSTALL, env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    venv = stage["root"] / "opt/lpr-edge/venv"
    models = stage["root"] / "opt/lpr-edge/models"
    listed = subprocess.run(
        [str(venv / "bin/lpr-edge"), "models", "list", "--models-dir", str(models)],
        capture_output=True,
        text=True,
        cwd=stage["tmp"],
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import edge; print(edge.__file__)"],
        capture_output=True,
        text=True,
        cwd=stage["tmp"],
    )
    assert where.stdout.startswith(str(venv)), "the installed copy, not the source tree"


# --- the unit ---------------------------------------------------------------------------------


def test_unit_has_the_service_contract_and_hardening():
    s = unit_settings(UNIT.read_text())

    def one(key: str) -> str:
        (value,) = s[f"Service.{key}"]
        return value

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert int(one("WatchdogSec")) > 0
    assert one("Restart") == "always"
    assert 1 <= int(one("RestartSec")) <= 30
    assert s["Unit.StartLimitIntervalSec"] == ["0"], "never give up restarting"
    assert one("User") == "lpr-edge"
    assert one("SupplementaryGroups").split() == ["video", "dialout"]
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("NoNewPrivileges") == "yes"
    assert one("CapabilityBoundingSet") == ""
    # Cameras and the GPS stay reachable: nothing hides or blocks /dev/video*, ttyUSB*.
    assert s.get("Service.PrivateDevices", ["no"]) == ["no"]
    assert "Service.DevicePolicy" not in s and "Service.DeviceAllow" not in s
    assert "Service.ProtectClock" not in s, "implies a DeviceAllow= list before systemd 253"
    assert "Service.PrivateNetwork" not in s and "Service.IPAddressDeny" not in s
    assert set(one("RestrictAddressFamilies").split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "Service.MemoryDenyWriteExecute" not in s
    assert s["Service.SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert s["Install.WantedBy"] == ["multi-user.target"]


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` on a copy whose ExecStart runs a binary that exists
    here (the installed /opt/lpr-edge one does not). The unit's user need not exist:
    verify does not check it."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    true = shutil.which("true")
    lines = [
        f"ExecStart={true} run --config /etc/lpr-edge/edge.toml"
        if line.startswith("ExecStart=")
        else line
        for line in unit_text.splitlines()
    ]
    folder = tmp_path / "units"
    folder.mkdir(exist_ok=True)
    copy = folder / "lpr-edge.service"
    copy.write_text("\n".join(lines) + "\n")
    return subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )


def test_systemd_analyze_verify_finds_nothing(tmp_path):
    result = verify(UNIT.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == "", "no warning of any kind"


def test_systemd_analyze_verify_of_the_staged_unit(stage):
    assert run(INSTALL, {**stage["env"], "PREFIX": "/opt/lpr-test"}).returncode == 0
    text = (stage["root"] / "etc/systemd/system/lpr-edge.service").read_text()
    result = verify(text, stage["tmp"])
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_systemd_analyze_verify_only_misses_the_installed_binary(tmp_path):
    """The unit as shipped, on a machine without the install: the missing ExecStart
    binary is the one complaint allowed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    folder = tmp_path / "units"
    folder.mkdir()
    shutil.copy(UNIT, folder / "lpr-edge.service")
    result = subprocess.run(
        [analyze, "verify", str(folder / "lpr-edge.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert all("/opt/lpr-edge/venv/bin/lpr-edge" in line for line in complaints), complaints
