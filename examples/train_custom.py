"""Your own network, trained by minialex's Trainer: checkpoints, exact resume, a callback of yours.

    python examples/train_custom.py                          # the built-in data, 5 epochs, CPU
    python examples/train_custom.py --data ~/imagenette2 --epochs 20 --out runs/mine
    python examples/train_custom.py --resume runs/mine/last.npz --epochs 30   # continue, exactly

The network is a plain nn.Sequential; anything mapping (N, 3, H, W) images to (N, classes) logits
works. The same network from the shell, with everything minialex-train adds (pictures, layer
diagnostics, the decoded store): minialex-train --model examples/train_custom.py:small_cnn
"""
import argparse

import minialex as ma
from minialex import nn
from minialex.data import DataLoader, ImageFolder, Transform, dataset_stats, make_synthetic
from minialex.training import Callback, Checkpoint, EpochLine, ProgressBar, StepLR, Trainer


def small_cnn(num_classes):
    """Three conv blocks and a classifier for 32x32 images (about 0.1M parameters)."""
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),       # 32 x 16 x 16
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),      # 64 x 8 x 8
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),      # 64 x 4 x 4
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4 * 4, num_classes))
    net.input_size = 32                  # the image side it takes (minialex-train --model reads it)
    return net


class BestSoFar(Callback):
    """A callback of your own: says when validation accuracy improves, and remembers the best
    across a resume (its state goes into every checkpoint)."""

    def __init__(self):
        self.best = 0.0

    def on_epoch_end(self, trainer, record):
        if record["val_top1"] > self.best:
            self.best = record["val_top1"]
            print(f"  new best val top-1: {self.best:.1%} (epoch {record['epoch']})")

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state["best"]


def main(data=None, epochs=5, out="runs/custom", resume=None, device="cpu"):
    ma.cpu.tune()                        # malloc/OpenBLAS settings for training
    root = data or make_synthetic()      # root/train/<class>/*.jpg and root/val/<class>/*.jpg
    train_set = ImageFolder(f"{root}/train")
    val_set = ImageFolder(f"{root}/val", classes=train_set.classes)
    stats = dataset_stats(train_set)     # mean, std and RGB PCA for normalisation and colour noise

    ma.manual_seed(0)
    model = small_cnn(len(train_set.classes))
    size = model.input_size
    optimizer = ma.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    train_loader = DataLoader(train_set, Transform(size, stats, "train"), batch_size=min(64, len(train_set)), shuffle=True,
                              drop_last=True, workers=2)
    val_loader = DataLoader(val_set, Transform(size, stats, "val"), batch_size=200)

    trainer = Trainer(model, optimizer, train_loader, val_loader, epochs=epochs, schedule=StepLR(10),
                      callbacks=[Checkpoint(out), BestSoFar(), ProgressBar(), EpochLine()], device=device)
    history = trainer.fit(resume=resume)
    if trainer.interrupted:
        print(f"stopped by {trainer.interrupted.name}: resume with --resume {out}/interrupted.npz")
    elif history:
        print(f"{len(history)} epochs; last val top-1 {history[-1]['val_top1']:.1%}; checkpoints in {out}")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="ImageNet-style folder (default: the built-in data)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="runs/custom")
    parser.add_argument("--resume", help="a checkpoint of this script to continue")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda-emu")
    args = parser.parse_args()
    main(args.data, args.epochs, args.out, args.resume, args.device)
