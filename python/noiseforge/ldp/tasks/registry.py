"""The task registry (:data:`TASKS`, :func:`get_task`) and the cloud provider's model
of a task (:func:`task_cloud_model`, trained once and cached on disk)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from noiseforge.ldp.models import cached_model, train_classifier
from noiseforge.ldp.tasks.base import LDPTask
from noiseforge.ldp.tasks.images import digits_task, fashion_task, mnist5k_task
from noiseforge.ldp.tasks.text import text_task

TASKS: dict[str, Callable[..., LDPTask]] = {
    "fashion": fashion_task,
    "digits": digits_task,
    "mnist5k": mnist5k_task,
    "text": text_task,
}


def get_task(name: str, **kwargs) -> LDPTask:
    """The task called ``name`` (one of ``TASKS``), built with ``kwargs``.

    Raises KeyError for an unknown name and MissingTaskDataError (naming what to
    install) when its data is missing.
    """
    if name not in TASKS:
        raise KeyError(f"unknown LDPKiT task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)


def task_cloud_model(
    task: LDPTask, *, seed: int = 0, cache_dir=None, progress: bool = True
) -> nn.Module:
    """The cloud provider's model of ``task``: ``make_model()`` trained on the cloud's
    split for ``cloud_epochs`` (Adam, batch 128), seeded and cached on disk."""
    x, y = task.x_cloud_train, task.y_cloud_train
    if task.name == "fashion" and x.shape[0] == 60000:
        from noiseforge.ldp.fashion import fashion_cloud_model

        return fashion_cloud_model(cache_dir=cache_dir, progress=progress, seed=seed)
    key = (
        f"{task.name}|{tuple(x.shape)}|{float(x.double().sum()):.6f}|{int(y.sum())}|"
        f"{task.cloud_epochs}|{seed}"
    )

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return task.make_model()

    def train(model: nn.Module) -> None:
        train_classifier(
            model, x, y, epochs=task.cloud_epochs, seed=seed, progress=progress, desc="cloud"
        )

    return cached_model(
        f"{task.name}-cloud", build, train, key=key, cache_dir=cache_dir, progress=progress
    )
