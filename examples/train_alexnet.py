"""The training loop written out with the library's pieces, step by step (what minialex-train does,
without the checkpoints, pictures and guard rails).

    python examples/train_alexnet.py                  # alexnet-mini on the built-in data, 3 epochs, CPU
    python examples/train_alexnet.py --epochs 1       # a quicker look
    python examples/train_alexnet.py --device cuda    # the same on a GPU
"""
import argparse
import time

import minialex as ma
from minialex import functional as F
from minialex.data import DataLoader, ImageFolder, Transform, dataset_stats, make_synthetic


def main(device="cpu", epochs=3):
    ma.cpu.tune()                                        # process-wide malloc/OpenBLAS settings for training
    ma.manual_seed(0)                                    # initial weights and dropout masks

    # Data: an ImageNet-style folder (root/train/<class>/*.jpg). The built-in one is rendered once.
    root = make_synthetic()
    train_set = ImageFolder(root / "train")
    val_set = ImageFolder(root / "val", classes=train_set.classes)
    stats = dataset_stats(train_set)                     # mean, std and RGB PCA of the training set

    # The network: AlexNet's eight layers, narrowed for 64x64 images.
    model = ma.models.AlexNet.mini(num_classes=len(train_set.classes)).to(device)
    size = model.input_size
    train_loader = DataLoader(train_set, Transform(size, stats, "train"), batch_size=32, shuffle=True,
                              drop_last=True, workers=2)  # random crops, flips, PCA colour noise
    val_loader = DataLoader(val_set, Transform(size, stats, "val"), batch_size=200)  # centre crops

    # The paper's optimizer: v <- 0.9 v - 0.0005 lr w - lr dL/dw;  w <- w + v
    opt = ma.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    for epoch in range(1, epochs + 1):
        train_loader.set_epoch(epoch)                    # a new shuffle and new crops each epoch
        start, seen = time.perf_counter(), 0
        for step, (x, y) in enumerate(train_loader, 1):
            logits = model(ma.Tensor(x, device=device))  # forward: records the graph
            loss = F.cross_entropy(logits, y)            # mean softmax cross-entropy
            model.zero_grad()                            # gradients accumulate: clear last step's
            loss.backward()                              # backward: every op's hand-written gradient
            opt.step()                                   # the SGD update
            seen += len(y)
            if step % 50 == 0 or step == len(train_loader):
                print(f"  epoch {epoch}, step {step}/{len(train_loader)}: loss {loss.item():.3f}, "
                      f"{seen / (time.perf_counter() - start):.0f} images/s", flush=True)
        model.eval()                                     # dropout off
        correct = total = 0
        with ma.no_grad():                               # no graph: less memory, faster
            for x, y in val_loader:
                correct += int((model(ma.Tensor(x, device=device)).numpy().argmax(1) == y).sum())
                total += len(y)
        model.train()
        print(f"epoch {epoch}: last loss {loss.item():.3f}, val top-1 {correct / total:.1%}, "
              f"{seen / (time.perf_counter() - start):.0f} images/s")
    ma.save(model.state_dict(), "alexnet-mini.npz")      # atomic, no pickle
    print("saved alexnet-mini.npz")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda-emu")
    args = parser.parse_args()
    main(args.device, args.epochs)
