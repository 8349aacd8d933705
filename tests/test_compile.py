"""``--model.compile_mode``: compiled runs match eager ones; CUDA graphs only where there is CUDA."""

from __future__ import annotations

import pytest
import torch

from fmnist_pl.model import MLP, compile_network
from fmnist_pl.module import FashionClassifier


def test_auto_stays_eager_on_the_cpu_and_changes_no_global_setting() -> None:
    module = FashionClassifier(compile_mode="auto")
    module.configure_model()
    assert not module._compiled
    assert compile_network(MLP(), "auto", torch.device("cpu")) is False
    assert torch._dynamo.config.suppress_errors is False  # not switched on for the whole process


@pytest.mark.slow
def test_compiled_network_matches_eager_and_keeps_checkpoint_keys() -> None:
    torch.manual_seed(0)
    module = FashionClassifier(compile_mode="default")
    eager_keys = set(module.state_dict())
    images = torch.rand(64, 1, 28, 28)
    expected = module(images)
    compiles = []
    compile_once = module.net.compile
    module.net.compile = lambda **options: (compiles.append(options), compile_once(**options))
    module.configure_model()
    module.configure_model()  # Lightning calls it at every fit, validate, test and predict: compiled once
    assert compiles == [{"mode": "default", "dynamic": False}]
    torch.testing.assert_close(module(images), expected, rtol=1e-5, atol=1e-5)
    assert set(module.state_dict()) == eager_keys  # checkpoints load the same either way


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU; this machine has none")
def test_cuda_graph_training_matches_eager_on_the_gpu() -> None:
    def train(mode: str) -> torch.Tensor:
        torch.manual_seed(0)
        module = FashionClassifier(compile_mode=mode).cuda()
        module.configure_model()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.01)
        generator = torch.Generator(device="cuda").manual_seed(1)
        for _ in range(20):
            images = torch.rand(64, 1, 28, 28, device="cuda", generator=generator)
            targets = torch.randint(0, 10, (64,), device="cuda", generator=generator)
            loss, _, _ = module.model_step((images, targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    torch.testing.assert_close(train("reduce-overhead"), train("eager"), rtol=1e-4, atol=1e-5)
