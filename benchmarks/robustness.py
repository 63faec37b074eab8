"""Clean and robust accuracy of LeNet-5 on the bundled MNIST subset, trained normally and with
PGD adversarial training (Madry et al.), and what each costs in training time.

    python benchmarks/robustness.py                       # eps 0.1, 8 epochs, PGD-7 training
    python benchmarks/robustness.py --eps 0.2 --train-steps 10

Robust accuracy is measured with FGSM and with PGD-20 (a random start, step 2.5 eps / 20) at
the same eps, on the 1,000 held-out digits. Accuracies are deterministic for a seed; times
depend on the machine (its CPU is printed).
"""
import argparse
import time

import fastcnn as fc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=7, help="PGD steps during training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (x, y), (x_test, y_test) = fc.datasets.load_mnist(seed=args.seed)
    print(f"CPU: {fc.info()['cpu']} ({fc.get_isa()}, {fc.get_num_threads()} threads); LeNet-5, "
          f"{len(x)} training / {len(x_test)} test digits, {args.epochs} epochs, eps {args.eps}")
    attacks = {"FGSM": fc.attacks.FGSM(args.eps),
               "PGD-20": fc.attacks.PGD(args.eps, steps=20, seed=args.seed)}
    print(f"{'training':<28} {'clean':>7} {'FGSM':>7} {'PGD-20':>7} {'fit (s)':>8}")
    for name, adversarial in (("normal", None),
                              (f"PGD-{args.train_steps} adversarial",
                               fc.attacks.PGD(args.eps, steps=args.train_steps))):
        fc.manual_seed(args.seed)
        model = fc.models.lenet5()
        model.compile(optimizer=fc.Adam(lr=2e-3), loss="cross_entropy")
        start = time.perf_counter()
        model.fit(x, y, epochs=args.epochs, batch_size=64, seed=args.seed, verbose=0,
                  adversarial=adversarial)
        seconds = time.perf_counter() - start
        clean = model.evaluate(x_test, y_test)["accuracy"]
        robust = [model.evaluate(x_test, y_test, attack=a)["accuracy"] for a in attacks.values()]
        print(f"{name:<28} {100 * clean:>6.1f}% {100 * robust[0]:>6.1f}% {100 * robust[1]:>6.1f}% "
              f"{seconds:>8.1f}")


if __name__ == "__main__":
    main()
