"""The tiny CPU backbone starts from saved weights, as the fine-tuning recipes need (a run's checkpoint.pt or a
plain state dict), and a file of another shape is refused with the mismatch named."""

import pytest
import torch

from lrfr_plugins.errors import LrfrError


def test_weights_from_a_run_checkpoint_or_a_state_dict(tmp_path, registry):
    torch.manual_seed(0)
    trained = registry.create("backbone", "tiny", embedding_size=16)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # not the initialisation a fresh model would draw
    torch.save({"backbone": trained.state_dict(), "step": 7}, tmp_path / "checkpoint.pt")
    torch.save(trained.state_dict(), tmp_path / "backbone.pth")
    x = torch.randn(3, 3, 112, 112)
    expected = trained.eval()(x)
    for name in ("checkpoint.pt", "backbone.pth"):
        loaded = registry.create("backbone", "tiny", embedding_size=16, weights=str(tmp_path / name)).eval()
        assert torch.equal(loaded(x), expected), name


def test_weights_of_another_shape_are_refused_by_name(tmp_path, registry):
    torch.save(registry.create("backbone", "tiny", embedding_size=16).state_dict(), tmp_path / "other.pth")
    with pytest.raises(LrfrError, match=r"other\.pth"):
        registry.create("backbone", "tiny", embedding_size=32, weights=str(tmp_path / "other.pth"))
