import pytest
import torch

from sslzoo.errors import DataError
from sslzoo.hub import load_encoder
from sslzoo.models.encoders import EncoderConfig, create_encoder, encoder_state_dict, save_encoder
from sslzoo.models.unet import build_unet


def test_unet_encoder_initialised_from_export_and_freezing(tmp_path):
    torch.manual_seed(0)
    enc = create_encoder("resnet18")
    save_encoder(enc, tmp_path / "enc", EncoderConfig(backbone="resnet18", method="simclr", dataset="monuseg"))
    encoder, config = load_encoder(tmp_path / "enc", backbone="resnet50")
    assert config.backbone == "resnet18"  # the export's own backbone wins
    model = build_unet(encoder, config.backbone, task="instance", frozen=True, frozen_bn="eval")
    torch.testing.assert_close(model.encoder.conv1.weight, enc.conv1.weight)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert any(p.requires_grad for p in model.decoder.parameters())
    model.train()
    assert not model.encoder.training and model.decoder.training
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 1, 64, 64)


def test_frozen_encoder_keeps_batch_norm_in_train_mode_by_default_as_the_authors():
    """Issue 12, defect 4: the authors only set requires_grad=False, so batch norm of a frozen encoder normalises
    with batch statistics and updates its running statistics; the eval-mode behaviour is an option."""
    from sslzoo.errors import ConfigError

    torch.manual_seed(0)
    model = build_unet(create_encoder("resnet18"), "resnet18", "semantic", frozen=True)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert model.encoder.training and model.encoder.bn1.training
    before = model.encoder.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert not torch.equal(before, model.encoder.bn1.running_mean)  # statistics follow the data
    # the option: batch norm fixed (eval mode) under model.train()
    fixed = build_unet(create_encoder("resnet18"), "resnet18", "semantic", frozen=True, frozen_bn="eval")
    fixed.train()
    assert not fixed.encoder.training and not fixed.encoder.bn1.training and fixed.decoder.training
    before = fixed.encoder.bn1.running_mean.clone()
    fixed(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert torch.equal(before, fixed.encoder.bn1.running_mean)
    with pytest.raises(ConfigError, match="frozen_bn"):
        build_unet(create_encoder("resnet18"), "resnet18", frozen=True, frozen_bn="fixed")  # type: ignore[arg-type]


def test_unet_takes_a_state_dict_and_refuses_another_backbone():
    torch.manual_seed(0)
    state = encoder_state_dict(create_encoder("resnet18"))
    model = build_unet(state, "resnet18")
    torch.testing.assert_close(model.encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    with pytest.raises(DataError, match="my-encoder: weights do not match"):
        build_unet(state, "resnet34", source="my-encoder")
