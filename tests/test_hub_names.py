"""Zoo names, namespaces and served aliases (CONTRACTS.md section 1)."""

from __future__ import annotations

import pytest

from sslzoo.cli import main
from sslzoo.errors import ConfigError, NotFoundError
from sslzoo.hub import defaults
from sslzoo.hub.names import (
    ZooName,
    hub_namespace,
    is_zoo_name,
    parse_name,
    planned_names,
    repo_id_for,
    split_repo_id,
)
from sslzoo.vocabulary import BACKBONES, DATASET_KINDS, INITS


def test_encoder_and_segmenter_names_parse() -> None:
    encoder = parse_name("densecl-resnet50-monuseg")
    assert encoder == ZooName(method="densecl", backbone="resnet50", dataset="monuseg")
    assert encoder.kind == "encoder" and encoder.name == "densecl-resnet50-monuseg"
    segmenter = parse_name("barlowtwins-resnet18-isic2017-semantic")
    assert (segmenter.kind, segmenter.task, segmenter.encoder_name) == (
        "segmenter",
        "semantic",
        "barlowtwins-resnet18-isic2017",
    )
    assert str(parse_name("imagenet-resnet50-dsb2018-instance")) == "imagenet-resnet50-dsb2018-instance"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("foo-resnet50-monuseg", "unknown method 'foo'"),
        ("densecl-vgg16-monuseg", "unknown backbone 'vgg16'"),
        ("densecl-resnet50-cityscapes", "unknown dataset 'cityscapes'"),
        ("densecl-resnet50-monuseg-panoptic", "unknown task 'panoptic'"),
        ("densecl-resnet50", "malformed zoo name"),
        ("densecl-resnet50-monuseg-instance-x", "malformed zoo name"),
        ("", "empty zoo name"),
        ("sslzoo/densecl-resnet50-monuseg", "is a repo id"),
        ("nuclei", "served alias"),
    ],
)
def test_bad_names_say_what_is_wrong(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_name(name)
    assert not is_zoo_name(name)
    if "unknown" in fragment:  # the message lists the valid choices
        choices = {"method": INITS, "backbone": BACKBONES, "dataset": DATASET_KINDS}.get(fragment.split()[1], ())
        assert all(choice in str(info.value) for choice in choices)


def test_namespace_from_argument_environment_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSLZOO_HUB_NAMESPACE", raising=False)
    assert repo_id_for("simclr-resnet50-isic2017") == "sslzoo/simclr-resnet50-isic2017"
    monkeypatch.setenv("SSLZOO_HUB_NAMESPACE", "my-lab")
    assert repo_id_for("simclr-resnet50-isic2017") == "my-lab/simclr-resnet50-isic2017"
    assert repo_id_for("simclr-resnet50-isic2017", namespace="other") == "other/simclr-resnet50-isic2017"
    monkeypatch.setenv("SSLZOO_HUB_NAMESPACE", "bad namespace!")
    with pytest.raises(ConfigError, match="SSLZOO_HUB_NAMESPACE"):
        hub_namespace()


def test_split_repo_id() -> None:
    assert split_repo_id("lab/densecl-resnet50-monuseg") == ("lab", "densecl-resnet50-monuseg")
    assert split_repo_id("densecl-resnet50-monuseg") == (None, "densecl-resnet50-monuseg")
    for bad in ("a/b/c", "/x", "x/"):
        with pytest.raises(ConfigError, match="NAMESPACE/NAME"):
            split_repo_id(bad)


def test_backbones_match_the_encoder_factory() -> None:
    from sslzoo.models.encoders import SUPPORTED_BACKBONES

    assert BACKBONES == SUPPORTED_BACKBONES


def test_planned_names_cover_every_method_and_dataset() -> None:
    names = planned_names()
    assert len(names) == len(set(names)) == 3 * 7 + 3 * 9
    assert all(is_zoo_name(n) for n in names)
    assert "densecl-resnet50-monuseg" in names and "random-resnet50-isic2017-semantic" in names


def test_aliases_resolve_to_zoo_entries_and_evaluate_has_no_model() -> None:
    for alias in ("nuclei", "lesion", "embed"):
        target = defaults.resolve_alias(alias)
        assert is_zoo_name(target)
    assert parse_name(defaults.resolve_alias("nuclei")).task == "instance"
    assert parse_name(defaults.resolve_alias("lesion")).task == "semantic"
    assert parse_name(defaults.resolve_alias("embed")).kind == "encoder"
    assert defaults.resolve_alias("densecl-resnet50-monuseg") == "densecl-resnet50-monuseg"
    with pytest.raises(ConfigError, match="evaluation service"):
        defaults.resolve_alias("evaluate")


def test_missing_embedded_default_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(defaults.DEFAULTS_ENV, str(tmp_path / "none"))
    assert defaults.packaged_names() == []
    assert defaults.packaged_folder("nuclei") is None
    with pytest.raises(NotFoundError, match="no embedded default model for 'nuclei'") as info:
        defaults.require_default("nuclei")
    assert "sslzoo pull densecl-resnet18-monuseg-instance" in str(info.value)


def test_cli_bad_name_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "foo-resnet50-monuseg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown method 'foo'") and "\n" not in err


def test_package_exports_resolve_lazily() -> None:
    import sslzoo.hub as hub

    for name in hub.__all__:
        assert getattr(hub, name) is not None
    assert hub.load_encoder.__module__ == "sslzoo.hub.resolve"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hub.nope  # noqa: B018
