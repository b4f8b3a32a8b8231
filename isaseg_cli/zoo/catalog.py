"""Loads, validates and searches ``model_zoo.yaml`` (shipped as package data beside this package).

The only name lookup in isaseg: a zoo name, legacy name, alias or unique prefix -> ``ZooEntry``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from isaseg_cli.errors import SpecError, ZooLookupError
from isaseg_cli.zoo.classes import dataset_meta
from isaseg_cli.zoo.spec import WeightsSpec, ZooEntry, from_dict

ZOO_VERSION = 1
_HEX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True, slots=True)
class Zoo:
    """All published entries (in file order) and the ImageNet-pretrained backbones."""

    entries: tuple[ZooEntry, ...]
    pretrained: dict[str, WeightsSpec]

    def names(self) -> list[str]:
        """Every name that resolves: full names, legacy names and aliases."""
        names: list[str] = []
        for entry in self.entries:
            names += [entry.name, entry.legacy_name, *entry.aliases]
        return names

    def resolve(self, name: str) -> ZooEntry:
        """Finds an entry by full name, legacy (0.x) name, alias or unique prefix of a full name.

        Raises:
            ZooLookupError: no entry matches, or a prefix matches several (the message lists them).
        """
        wanted = name.strip()
        for entry in self.entries:
            if wanted in (entry.name, entry.legacy_name) or wanted in entry.aliases:
                return entry
        matches = [entry for entry in self.entries if wanted and entry.name.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(entry.name for entry in matches)
            raise ZooLookupError(f"{name!r} matches {len(matches)} models: {listed}")
        aliases = [entry.aliases[0] for entry in self.entries if entry.aliases]
        message = _unknown("model", name, self.names(), aliases)
        raise ZooLookupError(f"{message} (`isaseg zoo` lists all)")

    def resolve_pretrained(self, name: str) -> WeightsSpec:
        """The ImageNet-pretrained backbone called ``name`` (e.g. ``resnet50_v1c``).

        Raises:
            ZooLookupError: no such backbone (the message lists the closest names).
        """
        try:
            return self.pretrained[name.strip()]
        except KeyError:
            known = list(self.pretrained)
            raise ZooLookupError(_unknown("pretrained backbone", name, known, known)) from None


def _unknown(kind: str, name: str, candidates: typing.Iterable[str], short: list[str]) -> str:
    """The message for a failed lookup: the closest names, else the ``short`` names to try."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=5, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"try one of: {', '.join(short)}"
    return f"unknown {kind} {name!r}; {hint}"


def zoo_path() -> Path:
    """The packaged ``model_zoo.yaml`` (a symlink to the repository root's file in a checkout)."""
    return Path(str(resources.files("isaseg_cli") / "model_zoo.yaml"))


@functools.cache
def load_zoo(path: Path | None = None) -> Zoo:
    """Reads and validates the zoo file (the packaged one by default); cached per path.

    Raises:
        SpecError: the file is missing or malformed; the message names the entry and field path.
    """
    source = path or zoo_path()
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"cannot read the model zoo {source}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source.name}: not valid YAML ({exc})") from None
    return parse_zoo(data, source.name)


def parse_zoo(data: Any, where: str = "model_zoo.yaml") -> Zoo:
    """Builds a ``Zoo`` from loaded YAML, checking every field of every entry.

    Raises:
        SpecError: naming the entry and the field path (``models.<name>.train.lr: ...``).
    """
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping at the top level")
    _check_keys(data, {"version", "pretrained", "models"}, where)
    if data["version"] != ZOO_VERSION:
        raise SpecError(f"{where}: version {data['version']!r} is not supported (want 1)")
    pretrained = {
        str(name): _weights(spec, f"{where}: pretrained.{name}")
        for name, spec in _mapping(data["pretrained"], f"{where}: pretrained").items()
    }
    entries = []
    for name, body in _mapping(data["models"], f"{where}: models").items():
        path = f"{where}: models.{name}"
        if not isinstance(body, dict):
            raise SpecError(f"{path}: expected a mapping")
        if "name" in body:
            raise SpecError(f"{path}: unknown key 'name' (the entry's key is its name)")
        entry = from_dict(ZooEntry, {"name": str(name), **body}, path)
        _require_complete(ZooEntry, {"name": name, **body}, path)
        _check_entry(entry, pretrained, path)
        entries.append(entry)
    _check_unique(entries, where)
    return Zoo(entries=tuple(entries), pretrained=pretrained)


def _mapping(value: Any, where: str) -> dict[Any, Any]:
    if not isinstance(value, dict) or not value:
        raise SpecError(f"{where}: expected a non-empty mapping")
    return value


def _check_keys(data: dict[str, Any], keys: set[str], where: str) -> None:
    missing, unknown = sorted(keys - set(data)), sorted(set(data) - keys)
    if missing:
        raise SpecError(f"{where}: missing key {missing[0]!r}")
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})")


def _weights(spec: Any, where: str) -> WeightsSpec:
    weights = from_dict(WeightsSpec, spec, where)
    _check_sha256(weights, where)
    return weights


def _check_sha256(weights: WeightsSpec, where: str) -> None:
    if not _HEX.fullmatch(weights.sha256):
        raise SpecError(f"{where}.sha256: expected 8 to 64 lower-case hex digits")


def _require_complete(cls: type, data: dict[str, Any], where: str) -> None:
    """Every field must be spelled out: a silent default (e.g. align_corners) changes results."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name not in data:
            raise SpecError(f"{where}: missing key {field.name!r}")
        inner = _dataclass_of(hints[field.name])
        if inner is not None and data[field.name] is not None:
            _require_complete(inner, data[field.name], f"{where}.{field.name}")


def _dataclass_of(hint: Any) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return typing.cast(type, candidate)
    return None


def _check_entry(entry: ZooEntry, pretrained: dict[str, WeightsSpec], where: str) -> None:
    try:
        meta = dataset_meta(entry.data.dataset)
    except SpecError as exc:
        raise SpecError(f"{where}.data.dataset: {exc}") from None
    expected = len(entry.data.classes) or len(meta.classes)
    if entry.model.num_classes != expected:
        raise SpecError(
            f"{where}.model.num_classes: {entry.model.num_classes} does not match the "
            f"{expected} classes of {entry.data.dataset}"
        )
    if entry.weights is None or entry.published is None:
        raise SpecError(f"{where}: a published entry needs 'weights' and 'published'")
    _check_sha256(entry.weights, f"{where}.weights")
    if entry.train.pretrained is not None and entry.train.pretrained not in pretrained:
        raise SpecError(
            f"{where}.train.pretrained: {entry.train.pretrained!r} is not in the pretrained section"
        )


def _check_unique(entries: list[ZooEntry], where: str) -> None:
    owner: dict[str, str] = {}
    for entry in entries:
        for name in dict.fromkeys([entry.name, entry.legacy_name, *entry.aliases]):
            if not name:
                raise SpecError(f"{where}: models.{entry.name}: empty legacy name or alias")
            if name in owner:
                raise SpecError(
                    f"{where}: models.{entry.name}: name {name!r} is already used by {owner[name]}"
                )
            owner[name] = entry.name


def resolve_entry(name: str) -> ZooEntry:
    """Looks ``name`` up in the packaged zoo (see ``Zoo.resolve``)."""
    return load_zoo().resolve(name)
