"""Training a local model with Ray Train: :func:`train_ray`.

:func:`noiseforge.ldp.models.train_classifier` in ``workers`` processes at once,
data parallel (PyTorch DistributedDataParallel over gloo, on CPUs): every process
draws the same batches, computes the loss of its share of each batch, and the
averaged gradient is the whole batch's, so the trained model is the one a single
process trains, up to float rounding (a model with batch norm sees only its
process's rows of a batch). This buys compute, not memory: each process reads the
whole query set from the object store (once per node; processes on one node share
it without copies).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Any

import numpy as np
import torch

from noiseforge._common.validation import check_int
from noiseforge.distributed.runtime import TASK_CPUS, configure_threads, connect, require_ray
from noiseforge.ldp.models import check_training_inputs, train_classifier

#: the file a trained model's state is kept in, in Ray Train's checkpoint
_STATE = "model.pt"


def _train_loop(config: dict[str, Any]) -> None:
    """The body of each Ray Train worker."""
    import ray
    import ray.train
    import ray.train.torch

    configure_threads()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model = config["model"]
    x = torch.from_numpy(np.asarray(ray.get(config["x"][0])))
    targets = torch.from_numpy(np.asarray(ray.get(config["targets"][0])))
    wrapped = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    losses = train_classifier(
        wrapped, x, targets, part=(rank, world), progress=False, **config["kwargs"]
    )
    if rank != 0:
        ray.train.report({"loss": losses[-1]}, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="noiseforge-train-") as folder:
        torch.save(model.state_dict(), os.path.join(folder, _STATE))
        ray.train.report(
            {"loss": losses[-1]}, checkpoint=ray.train.Checkpoint.from_directory(folder)
        )


def train_ray(
    model: torch.nn.Module,
    x: Any,
    targets: Any,
    *,
    workers: int = 2,
    cpus_per_worker: float = TASK_CPUS,
    storage_path: str | os.PathLike | None = None,
    address: str | None = None,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    schedule: str = "constant",
    seed: int = 0,
) -> torch.nn.Module:
    """``model`` trained as :func:`~noiseforge.ldp.models.train_classifier` trains it,
    by ``workers`` Ray Train processes (``cpus_per_worker`` CPUs each), and returned
    (the same object, in eval mode). ``x``: (N, ...) inputs; ``targets``: (N,) class
    ids or (N, C) probabilities. ``storage_path``: where Ray Train keeps the run and
    the trained state (default a temporary folder, removed afterwards; on a cluster
    of several machines, storage every node mounts). ``workers=1`` trains in one
    Ray Train process, bit for bit as ``train_classifier``."""
    workers = check_int("workers", workers, 1)
    if not (isinstance(cpus_per_worker, int | float) and cpus_per_worker > 0):
        raise ValueError(f"cpus_per_worker must be a number > 0, got {cpus_per_worker!r}")
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    targets = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    check_training_inputs(x, targets, schedule)  # before any worker starts
    connect(address)
    ray = require_ray()
    try:
        import ray.train
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise ImportError(
            "training on Ray needs Ray Train: pip install 'noiseforge[ray]' (ray[train]>=2.60)"
        ) from None
    own = storage_path is None
    folder = tempfile.mkdtemp(prefix="noiseforge-ray-train-") if own else os.fspath(storage_path)
    try:
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={
                "model": model,
                # in lists, so that Ray passes the references (each worker gets the arrays)
                "x": [ray.put(x)],
                "targets": [ray.put(targets)],
                "kwargs": dict(
                    epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule, seed=seed
                ),
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus_per_worker}
            ),
            run_config=ray.train.RunConfig(
                name=f"noiseforge-train-{uuid.uuid4().hex[:12]}", storage_path=folder
            ),
        )
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            raise RuntimeError(f"training the local model on Ray failed: {exc}") from exc
        if result.checkpoint is None:
            raise RuntimeError("training on Ray finished without the trained model's state")
        with result.checkpoint.as_directory() as saved:
            state = torch.load(os.path.join(saved, _STATE), weights_only=True)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    model.load_state_dict(state)
    model.eval()
    return model
