"""The PyTorch twin of ``fastcnn train``: LeNet-5 on the bundled MNIST subset, same split, same
architecture, optimizer (Adam 3e-3, cosine over the epochs), batch size, epochs and threads,
timed the same way. Run both, one after the other, to compare wall time and accuracy:

    fastcnn train --threads 2 && python benchmarks/train_lenet_torch.py --threads 2
"""
import argparse
import time

import numpy as np
import torch  # before fastcnn: its OpenMP runtime keeps its own default wait policy

import fastcnn as fc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=fc.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    (x, y), (x_test, y_test) = fc.datasets.load_mnist(seed=args.seed)
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    x, x_test = to_nchw(x), to_nchw(x_test)
    y, y_test = torch.from_numpy(y), torch.from_numpy(y_test)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), args.batch_size):
            idx = order[i:i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
        schedule.step()
    train_time = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    images = len(x) * args.epochs
    print(f"PyTorch {torch.__version__}, {args.threads} threads: test accuracy {100 * accuracy:.2f}% "
          f"on {len(x_test):,} held-out digits")
    print(f"speed: {images / train_time:,.0f} images/s training ({args.epochs} epochs in "
          f"{train_time:.1f} s); wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
