"""Is LDPKiT's local model a copy of the cloud? Zest distances on Fashion-MNIST.

Models: the cloud CNN (seed 0); two CNNs trained the same way with seeds 1 and 2
(the independent pair that sets the unit); LDPKiT's local model (eps per pixel on
the 10k test images, 2 noise copies + 10k superimposed pairs = 40k noised queries,
4 epochs); model extraction: the same CNN trained on the cloud's answers to 40k
CLEAN queries (the 10k test images + the first 30k training images, which the
cloud also trained on: a strong attacker; 4 epochs), and
on the 10k clean test images only (4 epochs). Distances are divided by
d(seed 1, seed 2). Every model is trained once and cached (1-3 minutes each on
2 shared cores); with all cached a run takes about a minute. To stay under
5 minutes per command, train in steps:

    python examples/zest_fashion_mnist.py --models ldpkit
    python examples/zest_fashion_mnist.py --models extract40k
    python examples/zest_fashion_mnist.py            # all, from the cache
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from noiseforge.data import load_fashion_mnist
from noiseforge.ldp import InProcessCloud, NoiseSpec, PrivacyLedger, fashion, ldpkit
from noiseforge.ldp.extraction import extract_model
from noiseforge.ldp.fashion import fashion_cloud_model
from noiseforge.ldp.models import SmallCNN, accuracy, cached_model
from noiseforge.ldp.zest import METRICS, make_probe, zest_distances


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epsilon", type=float, default=7.0, help="per pixel")
    p.add_argument("--references", type=int, default=64)
    p.add_argument("--samples", type=int, default=256, help="LIME masks per reference")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--models",
        nargs="+",
        choices=["ldpkit", "extract40k", "extract10k"],
        default=["ldpkit", "extract40k", "extract10k"],
        help="models compared with the cloud (each trained once, then cached)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    def flat(a):
        return torch.from_numpy(a.reshape(len(a), -1)).float() / 255

    xte, yte = load_fashion_mnist("test")
    xtr, _ = load_fashion_mnist("train")
    x, y = flat(xte), torch.from_numpy(yte).long()
    models = {f"seed{s}": fashion_cloud_model(seed=s, progress=False) for s in (0, 1, 2)}
    cloud_net = models["cloud"] = models.pop("seed0")
    print(f"cloud-like CNNs ready ({time.time() - t0:.0f} s)")

    eps = args.epsilon

    def train_ldpkit(model):
        ldpkit(
            x,
            np.arange(len(x)),
            InProcessCloud(cloud_net),
            PrivacyLedger(eps * 784),
            NoiseSpec(eps),
            lambda: model,  # trained in place, then cached
            noise_copies=2,
            superimposed=1.0,
            epochs=4,
            seed=11,
            progress=False,
        )

    def train_extract(queries, seed):
        def train(model):
            # extract_model trains the model make_model returns: this one, in place
            extract_model(cloud_net, queries, lambda: model, epochs=4, seed=seed, progress=False)

        return train

    recipes = {
        "ldpkit": (train_ldpkit, f"ldpkit|eps={eps}|copies=2|superimposed=1|epochs=4|seed=11"),
        "extract40k": (
            train_extract(torch.cat([x, flat(xtr[:30000])]), 12),
            "extract|test10k+train30k|epochs=4|seed=12",
        ),
        "extract10k": (train_extract(x, 13), "extract|test10k|epochs=4|seed=13"),
    }
    for name in args.models:
        train, key = recipes[name]
        torch.manual_seed(10)
        models[name] = cached_model(
            f"fashion-{name}",
            SmallCNN,
            train,
            key=f"{key}|cloud-seed0-epochs{fashion.EPOCHS}",  # answers depend on the cloud
            progress=False,
        )
        print(f"{name} ready ({time.time() - t0:.0f} s)")

    with torch.no_grad():
        cloud_pred = cloud_net(x).argmax(1)
        for name, m in models.items():
            agree = float((m(x).argmax(1) == cloud_pred).float().mean())
            print(
                f"  {name:10s} test accuracy {accuracy(m, x, y):.3f}, agrees with cloud {agree:.3f}"
            )

    g = torch.Generator().manual_seed(0)
    refs = x[torch.randperm(len(x), generator=g)[: args.references]]
    probe = make_probe(refs, input_shape=(1, 28, 28), samples=args.samples, seed=0)
    pairs = [("seed1", "seed2"), ("cloud", "seed1")] + [("cloud", n) for n in args.models]
    d = zest_distances(models, pairs, probe)
    unit = d[("seed1", "seed2")]
    print(
        f"Zest distance / d(seed1, seed2): {args.references} test images x {args.samples} masks, "
        f"{probe.num_segments} patches ({time.time() - t0:.0f} s)"
    )
    print("pair                    " + "  ".join(f"{m:>7s}" for m in METRICS))
    for a, b in pairs:
        row = "  ".join(f"{d[(a, b)][m] / unit[m]:7.3f}" for m in METRICS)
        print(f"{a + ' vs ' + b:22s}  {row}")
    print("raw d(seed1, seed2):    " + "  ".join(f"{unit[m]:7.4g}" for m in METRICS))


if __name__ == "__main__":
    main()
