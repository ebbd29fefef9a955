"""Reading a YAML configuration file into a pydantic model, with errors that say what to fix.

Shared by the study (``sslzoo.study.config``) and the zoo build (``sslzoo.zoo.config``); torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from sslzoo.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_yaml_config(path: Path, model: type[ModelT], what: str, example: str, fields: str) -> ModelT:
    """``model`` validated from the YAML mapping at ``path``; :class:`ConfigError` names the file and the problem.

    ``what`` names the kind of config ("study config"), ``example`` a file to point at, ``fields`` its main keys.
    """
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}; pass a YAML file such as {example}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} is a YAML mapping with {fields}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
