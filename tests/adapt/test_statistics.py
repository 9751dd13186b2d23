"""AdaBN: the running statistics become the target set's moments (against a reference that
runs the layers by hand), padding excluded, every supported layer type, and its refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab import make_norm
from normlab.adapt import adabn, batch_norm_layers
from normlab.models import ViT, ViTConfig


class Net(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear -> BatchNorm on (B, T, C) tokens."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(5, 6), nn.Linear(6, 4)
        self.bn1, self.bn2 = make_norm("batchnorm", 6), make_norm("batchnorm", 4)

    def forward(self, x, mask=None):
        return self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(x), mask))), mask)


def target(n=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [3.0 + 2.0 * torch.randn(4, 7, 5, generator=gen, dtype=torch.float64)
            for _ in range(n)]


def moments(rows):
    rows = torch.cat(rows)
    return rows.mean(0), rows.var(0, unbiased=True)


def test_running_statistics_equal_the_target_moments():
    net = Net().double()
    batches = target()
    counts = adabn(net, batches, forward=lambda m, x: m(x))
    # by hand: bn1 sees fc1(x); bn2 sees fc2(relu(bn1 with each batch's own moments))
    with torch.no_grad():
        h1 = [net.fc1(x).reshape(-1, 6) for x in batches]
        h2 = [net.fc2(torch.relu(F.batch_norm(h, None, None, net.bn1.weight, net.bn1.bias,
                                              training=True, eps=net.bn1.eps)))
              for h in h1]
    for bn, rows in ((net.bn1, h1), (net.bn2, h2)):
        mean, var = moments(rows)
        torch.testing.assert_close(bn.running_mean, mean)
        torch.testing.assert_close(bn.running_var, var)
    assert counts == {"bn1": 84, "bn2": 84}
    assert net.training and net.bn1.training and net.fc1.training  # modes restored


def test_padding_is_left_out():
    net = Net().double()
    batches = target(1)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[:, 5:] = False
    adabn(net, batches, forward=lambda m, x: m(x, mask))
    rows = net.fc1(batches[0])[mask].detach()
    torch.testing.assert_close(net.bn1.running_mean, rows.mean(0))
    torch.testing.assert_close(net.bn1.running_var, rows.var(0, unbiased=True))


def test_torch_batchnorm_and_the_vit():
    conv = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)).double()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64) * 3 + 1
    adabn(conv, [x[:2], x[2:]])
    rows = conv[0](x).detach().movedim(1, -1).reshape(-1, 3)
    torch.testing.assert_close(conv[1].running_mean, rows.mean(0))
    torch.testing.assert_close(conv[1].running_var, rows.var(0, unbiased=True))
    vit = ViT(ViTConfig(depth=1, dim=16, heads=2, image_size=8, patch_size=4, num_classes=3,
                        norm="batchnorm"))
    before = {n: b.clone() for n, b in vit.named_buffers()}
    counts = adabn(vit, [torch.randn(8, 1, 8, 8)])
    assert set(counts) == {name for name, _ in batch_norm_layers(vit)} and counts
    assert any(not torch.equal(b, before[n]) for n, b in vit.named_buffers())


@pytest.mark.parametrize("name", ["repbn", "bcn", "prepbn"])
def test_other_moment_norms(name):
    net = nn.Sequential(nn.Linear(4, 8), make_norm(name, 8)).double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    adabn(net, [x], forward=lambda m, x: m(x))
    (_, layer), = batch_norm_layers(net)
    rows = net[0](x).detach().reshape(-1, 8)
    torch.testing.assert_close(layer.running_mean, rows.mean(0))


def test_refusals():
    with pytest.raises(ValueError, match="no batch-statistics norm"):
        adabn(nn.Sequential(nn.Linear(4, 4), make_norm("layernorm", 4)), [torch.randn(2, 4)])
    with pytest.raises(ValueError, match="PowerNorm"):
        adabn(nn.Sequential(nn.Linear(4, 4), make_norm("powernorm", 4)), [torch.randn(2, 3, 4)])
    with pytest.raises(ValueError, match="saw 0 tokens"):
        adabn(Net(), [])
