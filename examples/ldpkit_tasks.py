"""LDPKiT against standard eps-LDP on any LDPKiT task (digits, mnist5k, text, fashion).

The cloud trains the task's model on its split (cached); the client releases its
private rows once with per-feature Laplace noise on the task's domain (the ledger
charges eps per feature), and each method is scored on the private labels.

    python examples/ldpkit_tasks.py --task digits --epsilon 7 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from noiseforge.ldp import InProcessCloud, NoiseSpec, PrivacyLedger, ldpkit, standard_ldp
from noiseforge.ldp.models import accuracy
from noiseforge.ldp.tasks import TASKS, get_task, task_cloud_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=sorted(TASKS), default="digits")
    p.add_argument("--epsilon", type=float, nargs="+", default=[7.0, 2.0], help="per feature")
    p.add_argument("--epochs", type=int, default=None, help="local model (default: the task's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    task = get_task(args.task)
    print(task.description)
    cloud_net = task_cloud_model(task, progress=False)
    cloud = InProcessCloud(cloud_net)
    x, y = task.x_private, task.y_private
    f = task.num_features
    print(
        f"cloud on clean private inputs: {accuracy(cloud_net, x, y):.3f}  ({time.time() - t0:.0f} s)"
    )
    records = np.arange(len(x))
    epochs = args.epochs or task.local_epochs
    print("eps/feature  eps/input  standard  LDPKiT  queries  seconds")
    for eps in args.epsilon:
        t = time.time()
        noise = NoiseSpec(eps, task.lower, task.upper)
        std = standard_ldp(
            x, records, cloud, PrivacyLedger(eps * f), noise, seed=args.seed, progress=False
        )
        torch.manual_seed(args.seed)
        kit = ldpkit(
            x,
            records,
            cloud,
            PrivacyLedger(eps * f),
            noise,
            task.make_model,
            noise_copies=2,
            superimposed=1.0,
            epochs=epochs,
            seed=args.seed + 1,
            progress=False,
        )
        std_acc = float((std == y).float().mean())
        kit_acc = float((kit.predictions == y).float().mean())
        print(
            f"{eps:11g}  {eps * f:9g}  {std_acc:8.3f}  {kit_acc:6.3f}  {kit.queries:7d}  "
            f"{time.time() - t:7.0f}"
        )


if __name__ == "__main__":
    main()
