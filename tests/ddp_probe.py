"""Run by tests/test_ddp.py as a script: a real 2-process CPU DDP (gloo) fit and test.

Each rank fingerprints every training image it is given (a fixed random projection, float64) and
counts the test images it scores; rank 0 saves what all ranks saw to OUT. A spawned or torchrun'd
child process cannot report back through pytest, hence the file.

    python tests/ddp_probe.py DATA_DIR OUT LOADER
"""

import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from fmnist_pl.data.datamodule import FashionMNISTDataModule
from fmnist_pl.module import FashionClassifier


def fingerprint(images: torch.Tensor) -> torch.Tensor:
    projection = torch.randn(images[0].numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return images.flatten(1).double() @ projection


class Recorder(Callback):
    def __init__(self) -> None:
        self.train_seen: list[torch.Tensor] = []
        self.test_count = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train_seen.append(fingerprint(batch[0]))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.test_count += len(batch[1])


def main(data_dir: str, out: str, loader: str) -> None:
    data = FashionMNISTDataModule(data_dir=data_dir, download=False, batch_size=500, loader=loader, flip=False)
    model = FashionClassifier()
    recorder = Recorder()
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder], num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    seen = model.all_gather(torch.cat(recorder.train_seen))
    results = trainer.test(model, data, verbose=False)
    test_counts = model.all_gather(torch.tensor(recorder.test_count))
    if trainer.is_global_zero:
        torch.save({"train_seen": seen, "test_counts": test_counts, "test_acc": results[0]["test/acc"]}, Path(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
