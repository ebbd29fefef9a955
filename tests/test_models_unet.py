import torch

from sslzoo.models.encoders import EncoderConfig, create_encoder, save_encoder
from sslzoo.models.unet import build_unet


def test_unet_encoder_initialised_from_export_and_freezing(tmp_path):
    torch.manual_seed(0)
    enc = create_encoder("resnet18")
    save_encoder(enc, tmp_path / "enc", EncoderConfig(backbone="resnet18", method="simclr", dataset="monuseg"))
    model, config = build_unet(str(tmp_path / "enc"), backbone="resnet50", task="instance", frozen=True)
    assert config.backbone == "resnet18"  # the export's own backbone wins
    torch.testing.assert_close(model.encoder.conv1.weight, enc.conv1.weight)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert any(p.requires_grad for p in model.decoder.parameters())
    model.train()
    assert not model.encoder.training and model.decoder.training
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 1, 64, 64)
