"""One vocabulary (CONTRACTS.md section 1): the CLI, the pretext registry and every module use
``sslzoo.vocabulary``, so adding a method, dataset, task or backbone is one edit there."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from sslzoo import vocabulary as v
from sslzoo.cli import build_parser
from sslzoo.errors import ConfigError

PACKAGE = Path(v.__file__).resolve().parent

#: Option dest -> the vocabulary list its choices must be.
OPTION_LISTS: dict[str, tuple[str, ...]] = {
    "dataset": v.DATASET_KINDS,
    "task": v.TASKS,
    "method": v.INITS,
    "backbone": v.BACKBONES,
}
#: Lists that a module could spell out instead of importing (the aliases are a fixed contract; see below).
SPELLABLE: dict[str, tuple[str, ...]] = {
    "METHODS": v.METHODS,
    "BASELINES": v.BASELINES,
    "INITS": v.INITS,
    "NAMED_DATASETS": v.NAMED_DATASETS,
    "DATASET_KINDS": v.DATASET_KINDS,
    "TASKS": v.TASKS,
    "BACKBONES": v.BACKBONES,
    "MODEL_ALIASES": v.MODEL_ALIASES,
    "ALIASES": v.ALIASES,
}


# ----------------------------------------------------------------------------------------------- the lists


def test_lists_follow_the_contract_and_their_literals() -> None:
    assert v.METHODS == ("autoencoder", "simclr", "byol", "moco", "barlowtwins", "densecl", "detco")
    assert v.BASELINES == ("random", "imagenet")
    assert v.INITS == v.METHODS + v.BASELINES
    assert v.DATASET_KINDS == (*v.NAMED_DATASETS, "folder") == ("isic2017", "monuseg", "dsb2018", "folder")
    assert v.TASKS == ("semantic", "instance")
    assert v.ALIASES == v.MODEL_ALIASES + v.SERVICE_ALIASES == ("nuclei", "lesion", "embed", "evaluate", "rank")
    pairs = [
        (v.Method, v.METHODS),
        (v.Baseline, v.BASELINES),
        (v.Init, v.INITS),
        (v.NamedDataset, v.NAMED_DATASETS),
        (v.DatasetKind, v.DATASET_KINDS),
        (v.Task, v.TASKS),
        (v.Backbone, v.BACKBONES),
        (v.ZooKind, v.ZOO_KINDS),
        (v.Alias, v.ALIASES),
    ]
    for literal, values in pairs:
        assert get_args(literal) == values and len(set(values)) == len(values)
        assert all(v.NAME_SEPARATOR not in name and name == name.lower() for name in values)


def test_dataset_tasks_and_aliases_say_what_they_are() -> None:
    assert v.DATASET_TASKS == {"isic2017": "semantic", "monuseg": "instance", "dsb2018": "instance"}
    assert set(v.ALIAS_INFO) == set(v.ALIASES)
    assert (v.ALIAS_INFO["nuclei"].kind, v.ALIAS_INFO["nuclei"].task) == ("segmenter", "instance")
    assert (v.ALIAS_INFO["lesion"].kind, v.ALIAS_INFO["lesion"].task) == ("segmenter", "semantic")
    assert v.ALIAS_INFO["evaluate"].kind == v.ALIAS_INFO["rank"].kind == "service"
    assert v.MODEL_ALIAS_KINDS == {"nuclei": "segmenter", "lesion": "segmenter", "embed": "encoder"}


def test_served_services_are_the_service_aliases() -> None:
    from sslzoo.hub.defaults import resolve_alias
    from sslzoo.serving.modelstore import SERVICES, default_models

    assert set(SERVICES) == set(v.SERVICE_ALIASES)
    assert set(default_models()) == set(v.ALIASES)
    for service in v.SERVICE_ALIASES:
        with pytest.raises(ConfigError, match="is a service"):
            resolve_alias(service)


def test_vocabulary_imports_no_heavy_library() -> None:
    code = (
        "import sys, sslzoo.vocabulary; "
        "print(sorted(m for m in ('torch', 'numpy', 'pydantic', 'huggingface_hub') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------------------------- the CLI


def _actions(parser: argparse.ArgumentParser, path: str = "sslzoo") -> list[tuple[str, argparse.Action]]:
    """Every action of ``parser`` and of its sub-commands, with the command path it belongs to."""
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _actions(sub, f"{path} {name}")
        else:
            found.append((path, action))
    return found


def test_cli_choice_lists_are_the_vocabulary() -> None:
    checked: set[tuple[str, str]] = set()
    for command, action in _actions(build_parser()):
        choices = tuple(action.choices) if action.choices is not None else None
        expected = OPTION_LISTS.get(action.dest)
        if choices is not None:
            # any choice list that overlaps a vocabulary list is that list, whatever its option is called
            for name, values in SPELLABLE.items():
                if set(choices) & set(values) and len(values) > 1:
                    assert choices == values or set(choices) > set(values), (command, action.dest, name)
            if expected is not None:
                assert choices == expected, f"{command} --{action.dest}: {choices} != {expected}"
                checked.add((command, action.dest))
        elif expected is not None and action.help:
            # validated by the API (one-line ConfigError); the help still lists the vocabulary
            assert all(name in action.help for name in expected), f"{command} --{action.dest}: {action.help}"
            checked.add((command, action.dest))
    assert {
        ("sslzoo data info", "dataset"),
        ("sslzoo pretrain", "dataset"),
        ("sslzoo pretrain", "method"),
        ("sslzoo pretrain", "backbone"),
        ("sslzoo finetune", "dataset"),
        ("sslzoo finetune", "task"),
        ("sslzoo finetune", "backbone"),
        ("sslzoo evaluate", "task"),
        ("sslzoo compare-encoders", "dataset"),
        ("sslzoo neighbours", "dataset"),
    } <= checked


def test_pretrain_help_lists_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(v.METHODS) in text


# ----------------------------------------------------------------------------------------------- the registry


def test_pretext_registry_is_the_vocabulary_methods() -> None:
    from sslzoo.pretext import registry

    assert registry.method_names() == list(v.METHODS)
    assert set(registry.load_methods()) == set(v.METHODS)
    assert registry.BASELINES == v.BASELINES
    with pytest.raises(ConfigError, match="unknown pretext method 'nope'; choose one of autoencoder, simclr"):
        registry.get_method("nope")


def test_registering_a_method_outside_the_vocabulary_fails() -> None:
    from sslzoo.pretext.registry import register_method

    class Unlisted:
        name = "swav"

    with pytest.raises(TypeError, match="sslzoo.vocabulary.Method does not list"):
        register_method(Unlisted)


def test_broken_method_module_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from sslzoo.pretext import registry

    registry.load_methods()
    monkeypatch.setitem(sys.modules, "sslzoo.pretext.byol", None)  # the next import of it fails
    with pytest.raises(ImportError, match=r"sslzoo\.pretext\.byol"):
        registry.load_methods()


def test_method_module_that_registers_nothing_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from sslzoo.pretext import registry

    registry.load_methods()
    monkeypatch.delitem(registry.REGISTRY, "byol")  # the module is imported, but no class is registered
    with pytest.raises(RuntimeError, match="byol registered no method"):
        registry.get_method("simclr")


# ----------------------------------------------------------------------------------------------- name grammar


@pytest.mark.parametrize("task", [None, *v.TASKS])
def test_every_name_round_trips(task: str | None) -> None:
    for method in v.INITS:
        for backbone in v.BACKBONES:
            for dataset in v.DATASET_KINDS:
                if task is None:
                    name = v.encoder_name(method, backbone, dataset)
                else:
                    name = v.segmenter_name(method, backbone, dataset, task)
                parsed = v.parse_name(name)
                assert (parsed.method, parsed.backbone, parsed.dataset, parsed.task) == (
                    method,
                    backbone,
                    dataset,
                    task,
                )
                assert parsed.name == str(parsed) == name == v.join_name(method, backbone, dataset, task)
                assert parsed.kind == ("encoder" if task is None else "segmenter")
                assert v.parse_name(parsed.encoder_name).kind == "encoder"


def test_zoo_name_is_a_small_frozen_record() -> None:
    parsed = v.parse_name("densecl-resnet50-monuseg-instance")
    assert parsed == v.ZooName("densecl", "resnet50", "monuseg", "instance")
    assert {parsed, v.parse_name("densecl-resnet50-monuseg-instance")} == {parsed}
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.task = "semantic"


@pytest.mark.parametrize(
    ("build", "fragment", "listed"),
    [
        (lambda: v.parse_name("swav-resnet50-monuseg"), "unknown method 'swav'", v.INITS),
        (lambda: v.parse_name("simclr-vit-monuseg"), "unknown backbone 'vit'", v.BACKBONES),
        (lambda: v.parse_name("simclr-resnet50-kvasir-semantic"), "unknown dataset 'kvasir'", v.DATASET_KINDS),
        (lambda: v.parse_name("simclr-resnet50-monuseg-panoptic"), "unknown task 'panoptic'", v.TASKS),
        (lambda: v.parse_name("simclr_resnet50_monuseg"), "malformed zoo name", ()),
        (lambda: v.parse_name("  "), "empty zoo name", ()),
        (lambda: v.parse_name("lab/simclr-resnet50-monuseg"), "is a repo id", ()),
        (lambda: v.parse_name("lesion"), "served alias", ()),
        (lambda: v.encoder_name("simclr", "resnet50", "monuseg-instance"), "unknown dataset 'monuseg-instance'", ()),
        (lambda: v.segmenter_name("simclr", "resnet50", "monuseg", "both"), "unknown task 'both'", v.TASKS),
    ],
)
def test_bad_names_are_explained(build, fragment: str, listed: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        build()
    message = str(info.value)
    assert ", ".join(listed) in message
    if "malformed" in fragment or "empty" in fragment:
        assert v.NAME_FORMAT in message  # says what a zoo name looks like


def test_study_encoder_folders_use_the_grammar() -> None:
    from sslzoo.study.folders import encoder_name

    assert encoder_name("simclr", "resnet18", "monuseg") == v.encoder_name("simclr", "resnet18", "monuseg")
    assert encoder_name("simclr", "resnet18", "nuclei") == "simclr-resnet18-nuclei"  # a study's own dataset key


# ----------------------------------------------------------------------------------------------- one place


def _offences(source: str) -> list[str]:
    """Displays (tuple / list / set, Literal[...] subscripts too) holding a whole vocabulary list, and string
    constants spelling out one of the longer lists ("autoencoder, simclr, ...")."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            strings = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            found += [f"line {node.lineno}: {name}" for name, values in SPELLABLE.items() if set(values) <= strings]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for name in ("METHODS", "INITS", "NAMED_DATASETS", "DATASET_KINDS", "BACKBONES"):
                if any(sep.join(SPELLABLE[name]) in node.value for sep in (", ", " | ", ",", "|", " ")):
                    found.append(f"line {node.lineno}: {name} in a string")
    return found


def test_the_offence_finder_finds_spelled_lists() -> None:
    assert _offences('Task = Literal["semantic", "instance"]') == ["line 1: TASKS"]
    assert _offences('KINDS = ["isic2017", "monuseg", "dsb2018"]') == ["line 1: NAMED_DATASETS"]
    assert _offences('if m in {"random", "imagenet", "x"}: pass') == ["line 1: BASELINES"]
    assert _offences('HELP = "one of autoencoder, simclr, byol, moco, barlowtwins, densecl, detco"') == [
        "line 1: METHODS in a string"
    ]
    assert _offences('PAPER = ("monuseg", "dsb2018")\nx = "semantic"') == []


def test_no_other_module_spells_the_vocabulary() -> None:
    offences = {
        str(path.relative_to(PACKAGE.parent)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "vocabulary.py" and (found := _offences(path.read_text(encoding="utf-8")))
    }
    assert offences == {}, f"import these lists from sslzoo.vocabulary instead: {offences}"
