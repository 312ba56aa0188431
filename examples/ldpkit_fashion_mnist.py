"""LDPKiT against standard eps-LDP on Fashion-MNIST, with the pieces built so far.

A first end-to-end run (about 90 s on 2 CPU cores) ahead of the full pipeline:
the cloud trains a CNN on the 60k training images; the client releases the 10k
test images once with per-pixel Laplace noise (the ledger charges eps per pixel,
784 eps per image), expands them for free (2 extra noise copies and 10k
superimposed pairs), asks the cloud for soft labels, trains a local CNN on that
noisy query set, and finally classifies its own clean private images locally.
Standard eps-LDP instead takes the cloud's answer on each noised image.

    python examples/ldpkit_fashion_mnist.py [--epsilon 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from noiseforge.data import load_fashion_mnist
from noiseforge.ldp import (
    InProcessCloud,
    PrivacyLedger,
    add_noise_copies,
    concat,
    release,
    superimpose,
)
from noiseforge.ldp.models import SmallCNN, accuracy, train_classifier


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epsilon", type=float, default=7.0, help="per-pixel epsilon")
    args = p.parse_args()
    t0 = time.time()
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    xtr, ytr = torch.from_numpy(xtr).float() / 255, torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(xte).float() / 255, torch.from_numpy(yte)
    torch.manual_seed(0)
    cloud_net = SmallCNN()
    train_classifier(cloud_net, xtr, ytr, epochs=2, desc="cloud")
    cloud = InProcessCloud(cloud_net)

    eps = args.epsilon
    ledger = PrivacyLedger(epsilon_budget=eps * 784)  # one release per image
    released = release(
        xte.reshape(len(xte), -1), np.arange(len(xte)), ledger, epsilon=eps, lower=0.0, upper=1.0
    )
    standard = float((cloud.predict(released).argmax(1) == yte).float().mean())

    queries = concat(
        released,
        add_noise_copies(released, 2, epsilon=eps, lower=0.0, upper=1.0),
        superimpose(released, len(released)),
    )
    soft_labels = cloud.predict(queries)
    local = SmallCNN()
    train_classifier(local, queries.data, soft_labels, epochs=4, desc="local")
    print(f"epsilon {eps:g} per pixel ({eps * 784:g} per image, charged once per image)")
    print(f"  cloud on clean images (no privacy):  {accuracy(cloud_net, xte, yte):.3f}")
    print(f"  standard eps-LDP (cloud on noised):  {standard:.3f}")
    print(f"  LDPKiT (local model, private inputs): {accuracy(local, xte, yte):.3f}")
    print(f"  {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
