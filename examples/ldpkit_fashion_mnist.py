"""LDPKiT against standard eps-LDP on Fashion-MNIST, spelled out with the library's
pieces (``noiseforge ldp run`` does the same from the command line).

About 2-3 minutes on 2 CPU cores (the cloud CNN is trained once and cached):
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
from noiseforge.ldp import InProcessCloud, NoiseSpec, PrivacyLedger, ldpkit, standard_ldp
from noiseforge.ldp.fashion import fashion_cloud_model
from noiseforge.ldp.models import SmallCNN, accuracy


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epsilon", type=float, default=7.0, help="per-pixel epsilon")
    args = p.parse_args()
    t0 = time.time()
    xte, yte = load_fashion_mnist("test")
    x = torch.from_numpy(xte).float().reshape(len(xte), -1) / 255
    y = torch.from_numpy(yte)
    cloud_net = fashion_cloud_model()  # trained once on the 60k training split, then cached
    cloud = InProcessCloud(cloud_net)
    noise = NoiseSpec(epsilon=args.epsilon)  # per pixel, pixels on [0, 1]
    records = np.arange(len(x))
    # separate ledgers: each method gets its own single release of every image
    standard = standard_ldp(x, records, cloud, PrivacyLedger(args.epsilon * 784), noise)
    kit = ldpkit(
        x,
        records,
        cloud,
        PrivacyLedger(args.epsilon * 784),
        noise,
        SmallCNN,
        noise_copies=2,
        superimposed=1.0,
        epochs=8,
    )
    eps = args.epsilon
    print(f"epsilon {eps:g} per pixel ({eps * 784:g} per image, charged once per image)")
    print(f"  cloud on clean images (no privacy):  {accuracy(cloud_net, x, y):.3f}")
    print(f"  standard eps-LDP (cloud on noised):  {float((standard == y).float().mean()):.3f}")
    print(
        f"  LDPKiT (local model, private inputs): {float((kit.predictions == y).float().mean()):.3f}"
    )
    print(f"  {kit.queries} cloud queries, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
