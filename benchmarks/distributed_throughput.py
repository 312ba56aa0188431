"""Throughput of each stage of the batch jobs: the local engine against Ray, same run.

Configurations (each in its own process, pinned to its cores with
``sched_setaffinity``, so a "1-CPU" Ray node really has one core of this machine;
the configurations alternate ``--repeat`` times):

- ``local-1`` / ``local-2``: the local engine (``noiseforge.ldp.ldpkit``'s steps,
  ``self_validation_filter``) with 1 / 2 torch threads on 1 / 2 cores;
- ``ray-1`` / ``ray-2``: a local Ray node of 1 / 2 CPUs on 1 / 2 cores, actor
  pools of ``workers`` = 1 / 2 actors (the stages of
  :func:`noiseforge.distributed.ldpkit_ray`, built from its operators the way it
  builds them, and :func:`~noiseforge.distributed.self_validation_filter_ray`).

Every stage runs at two sizes (``n/4`` and ``n`` records) so that its time
splits into a fixed cost (actor start-up, scheduling, the first block) and a
marginal throughput ``(n - n/4) / (T(n) - T(n/4))`` -- the rate a long job
reaches, and the input of the capacity model. The LDPKiT stages, on
Fashion-MNIST-shaped rows (784 features in [0, 1], 10 classes, an MLP cloud):

- ``release``: charge the ledger (SQLite) + draw the layer-1 noise;
- ``query``: verify each block, draw 2 noise copies, ask an in-process cloud,
  aggregate per record; ``query-http``: the same against ``noiseforge cloud
  serve`` (a server process on the same cores); ``superimpose``: n mixed pairs
  asked of the in-process cloud;
- ``train``: one epoch of the local model on the 4n query rows (one worker);
- ``inference``: the local model's labels for the n private rows;
- ``ldpkit``: the whole job (1 epoch) end to end;
- ``filter``: self-validation filtering (rows/s), 4 folds x 1 seed.

On ``ray-2`` it also measures Ray's overhead per block (an identity
``map_batches`` over the same rows cut into 2..512 blocks: the slope of time
against blocks) and the release's throughput against block size, and says where
the knee is. It measures the HNSW SQ8 index's bytes per vector (``--hnsw-n``
vectors of 384 dimensions), and ends with the capacity model
(:func:`capacity_model`) for 100M private records and 1B query-target pairs,
fed with the measured numbers (``benchmarks/ledger_throughput.py`` measures the
ledger; pass its JSON with ``--ledger-json``).

    python benchmarks/distributed_throughput.py [--n 8192] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import gc
import inspect
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from noiseforge.relevance.translate.base import Translator

ROOT = Path(__file__).resolve().parents[1]
FEATURES, CLASSES, EPSILON = 784, 10, 0.5
CONFIGS = ("ray-2", "local-2", "ray-1", "local-1")  # the order of each repeat
LDP_STAGES = ("release", "query", "query-http", "superimpose", "train", "inference", "ldpkit")
ALL_STAGES = (*LDP_STAGES, "filter", "mining", "augment")


# ----------------------------------------------------------------------------- workload
def cloud_mlp() -> Any:
    """The cloud's model (``--model benchmarks.distributed_throughput:cloud_mlp``), seeded:
    an untrained net costs what a trained one does."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 256), torch.nn.ReLU(), torch.nn.Linear(256, CLASSES)
    )


def local_mlp() -> Any:
    """The client's local model (the one LDPKiT trains)."""
    import torch

    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES)
    )


def private_rows(n: int, seed: int = 0) -> Any:
    """(n, 784) float32 rows in [0, 1]."""
    import torch

    return torch.rand(n, FEATURES, generator=torch.Generator().manual_seed(seed))


def noise_spec() -> Any:
    from noiseforge.ops.noise_spec import NoiseSpec

    return NoiseSpec(epsilon=EPSILON, lower=0.0, upper=1.0)


def new_ledger(folder: Path) -> Any:
    """A fresh SQLite ledger with no budget limit (the benchmark measures, never refuses)."""
    from noiseforge.ldp.ledger import PrivacyLedger

    return PrivacyLedger(math.inf, path=folder / f"ledger-{uuid.uuid4().hex}.sqlite")


def filter_table(rows: int) -> Any:
    from noiseforge.relevance.fixture import make_fixture

    return make_fixture("QC", rows, seed=3)


def filter_model(cache_dir: str) -> Callable[[], Any]:
    """A fast relevance model factory (hashing encoder, small MLP); picklable."""
    from noiseforge.relevance.embed import HashingEncoder
    from noiseforge.relevance.model import EmbeddingMLP

    enc = HashingEncoder(dim=64)
    return lambda: EmbeddingMLP(
        enc, cache_dir=cache_dir, hidden=(32,), batch_size=64, max_epochs=10, seed=0
    )


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the cloud server
def start_server() -> tuple[subprocess.Popen, str]:
    """``noiseforge cloud serve`` with :func:`cloud_mlp` (inherits this process's cores)."""
    cmd = [sys.executable, "-m", "noiseforge", "cloud", "serve", "--port", "0"]
    cmd += ["--model", "benchmarks.distributed_throughput:cloud_mlp", "--input-shape", "784"]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    found = re.search(r"(http://[\d.]+:\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"the cloud server did not start: {line!r}")
    return proc, found.group(1)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ----------------------------------------------------------------------------- local engine
def local_stages(
    n: int, block_rows: int, url: str, folder: Path, whole: bool = True
) -> dict[str, float]:
    """Seconds of each LDPKiT stage of the local engine on ``n`` records (and of the
    whole job when ``whole``)."""
    import torch

    from noiseforge.ldp import InProcessCloud, release
    from noiseforge.ldp.expand import add_noise_copies, concat, superimpose
    from noiseforge.ldp.http import HTTPCloud
    from noiseforge.ldp.models import predict_labels, train_classifier
    from noiseforge.ldp.pipeline import ldpkit
    from noiseforge.ldp.query import query_cloud
    from noiseforge.ops import soft_label_sum

    x, ids, noise = private_rows(n), np.arange(n), noise_spec()
    cloud, remote = InProcessCloud(cloud_mlp()), HTTPCloud(url, timeout=120)
    out: dict[str, Any] = {}
    t: dict[str, float] = {}

    def rel() -> None:
        out["released"] = release(x, ids, new_ledger(folder), noise, seed=7)

    def query(c: Any) -> Callable[[], None]:
        def run() -> None:
            released = out["released"]
            queries = concat(released, add_noise_copies(released, 2, noise, seed=8))
            answers = query_cloud(c, queries, batch_size=block_rows, progress=False)
            index = torch.cat([torch.arange(n), torch.arange(n).repeat_interleave(2)])
            soft_label_sum(index, answers, n, mean=True)
            out["queries"], out["answers"] = queries.data, answers

        return run

    def mixed() -> None:
        pairs = superimpose(out["released"], n, weight=0.5, seed=8)
        out["mixed"] = query_cloud(cloud, pairs, batch_size=block_rows, progress=False)

    def train() -> None:
        model = local_mlp()
        qx = torch.cat([out["queries"], out["queries"][:n]])  # 4n rows, as LDPKiT's set
        qy = torch.cat([out["answers"], out["mixed"]])
        train_classifier(model, qx, qy, epochs=1, batch_size=128, seed=0, progress=False)
        out["model"] = model

    t["release"] = timed(rel)
    t["query"] = timed(query(cloud))
    t["query-http"] = timed(query(remote))
    t["superimpose"] = timed(mixed)
    t["train"] = timed(train)
    t["inference"] = timed(lambda: predict_labels(out["model"], x))
    if whole:
        t["ldpkit"] = timed(
            lambda: ldpkit(
                x,
                ids,
                cloud,
                new_ledger(folder),
                noise,
                local_mlp,
                epochs=1,
                seed=7,
                progress=False,
            )
        )
    return t


def local_filter(rows: int, cache: str) -> float:
    from noiseforge.relevance.filtering import self_validation_filter

    df = filter_table(rows)
    return timed(lambda: self_validation_filter(df, filter_model(cache), k=4, seeds=(0,)))


# ----------------------------------------------------------------------------- ray engine
def _query_kwargs(cls: type, block_rows: int, **kwargs: Any) -> dict[str, Any]:
    """Constructor kwargs of a query actor, the way ldpkit_ray passes its request size."""
    params = inspect.signature(cls.__init__).parameters
    if "asking" in params:
        from noiseforge.distributed.ldpkit import _Asking

        kwargs["asking"] = _Asking(batch_size=block_rows)
    elif "batch_size" in params:
        kwargs["batch_size"] = block_rows
    return kwargs


def _drain(ds: Any) -> int:
    """Consume a dataset the way ldpkit_ray does (driver-side iteration); returns rows."""
    rows = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows += len(next(iter(batch.values())))
    return rows


def ray_stages(
    n: int, block_rows: int, workers: int, url: str, folder: Path, whole: bool = True
) -> dict[str, float]:
    """Seconds of each LDPKiT stage on Ray on ``n`` records (ldpkit_ray's operators; and
    of the whole ldpkit_ray job when ``whole``)."""
    import ray

    from noiseforge.distributed import CloudQuery, MixedQuery, ldpkit_ray, ray_release
    from noiseforge.distributed.ldpkit import (
        _CloudSpec,
        _columns_dataset,
        _pool,
        _Predict,
        _train,
        private_dataset,
    )
    from noiseforge.distributed.runtime import ACTOR_CPUS
    from noiseforge.ldp import InProcessCloud
    from noiseforge.ldp.http import HTTPCloud
    from noiseforge.random import seeded_generator

    x, ids, noise = private_rows(n), np.arange(n), noise_spec()
    cloud, remote = InProcessCloud(cloud_mlp()), HTTPCloud(url, timeout=120)
    blocks = -(-n // block_rows)
    out: dict[str, Any] = {}
    t: dict[str, float] = {}
    data = private_dataset(x, ids, block_rows=block_rows).materialize()

    def rel() -> None:
        ledger = new_ledger(folder)
        ds, _, _ = ray_release(data, None, ledger, noise, seed=7, batch_size=block_rows)
        out["released"], out["ledger"] = ds.materialize(), ledger

    def query(c: Any) -> Callable[[], None]:
        def run() -> None:
            stream = seeded_generator(8).reserve(n * 2 * FEATURES)
            kwargs = _query_kwargs(
                CloudQuery,
                block_rows,
                cloud=_CloudSpec.of(c),
                ledger=out["ledger"],
                noise=noise,
                copies=2,
                copy_stream=stream,
            )
            ds = out["released"].map_batches(
                CloudQuery,
                batch_size=None,
                batch_format="numpy",
                fn_constructor_kwargs=kwargs,
                compute=_pool(workers, blocks),
                num_cpus=ACTOR_CPUS,
            )
            _drain(ds)
            del ds

        return run

    def mixed() -> None:
        rng = np.random.default_rng(8)
        a = rng.integers(0, n, n)
        b = (a + rng.integers(1, n, n)) % n
        pairs = _columns_dataset({"pair": np.arange(n), "a": a, "b": b}, block_rows)
        kwargs = _query_kwargs(
            MixedQuery,
            block_rows,
            cloud=_CloudSpec.of(cloud),
            ledger=out["ledger"],
            released=[out["released"].to_arrow_refs()],
            weight=0.5,
        )
        if "noise" in inspect.signature(MixedQuery.__init__).parameters:
            kwargs["noise"] = noise
        ds = pairs.map_batches(
            MixedQuery,
            batch_size=block_rows,
            batch_format="numpy",
            fn_constructor_kwargs=kwargs,
            compute=_pool(workers, blocks),
            num_cpus=ACTOR_CPUS,
        )
        _drain(ds)
        del ds

    def train() -> None:
        qx = np.ascontiguousarray(np.concatenate([x.numpy()] * 4))  # 4n rows, as LDPKiT's set
        qy = np.full((4 * n, CLASSES), 1.0 / CLASSES, dtype=np.float32)
        task = ray.remote(num_cpus=1)(_train)
        kw = dict(epochs=1, batch_size=128, seed=0, progress=False)
        out["model"] = ray.get(task.remote(local_mlp(), qx, qy, kw))

    def infer() -> None:
        ref = ray.put(out["model"])
        ds = data.map_batches(
            _Predict,
            batch_size=None,
            batch_format="numpy",
            fn_constructor_kwargs=dict(model=[ref]),
            compute=_pool(workers, blocks),
            num_cpus=ACTOR_CPUS,
        )
        _drain(ds)
        del ds

    t["release"] = timed(rel)
    t["query"] = timed(query(cloud))
    t["query-http"] = timed(query(remote))
    t["superimpose"] = timed(mixed)
    t["train"] = timed(train)
    t["inference"] = timed(infer)
    if whole:
        t["ldpkit"] = timed(
            lambda: ldpkit_ray(
                x,
                ids,
                cloud,
                new_ledger(folder),
                noise,
                local_mlp,
                epochs=1,
                seed=7,
                progress=False,
                block_rows=block_rows,
                workers=workers,
            )
        )
    return t


def ray_filter(rows: int, cache: str) -> float:
    from noiseforge.distributed import self_validation_filter_ray

    df = filter_table(rows)
    return timed(lambda: self_validation_filter_ray(df, filter_model(cache), k=4, seeds=(0,)))


# ----------------------------------------------------------------------------- relevance
class WordTranslator(Translator):
    """A deterministic, picklable translator with no model (the stage's own cost):
    reverses each word and tags it with the target language."""

    name, version = "bench-words", "1"

    def pairs(self) -> set[tuple[str, str]]:
        langs = ("en", "fr", "es", "de", "it", "pl")
        return {(a, b) for a in langs for b in langs if a != b}

    def _translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        return [" ".join(f"{tgt}:{w[::-1]}" for w in t.split()) for t in texts]


def mining_table(rows: int, seed: int) -> Any:
    """``rows`` labelled query-target pairs over ``rows // 2`` distinct 3-word targets;
    each query shares a word with its target (a mining workload: many targets)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(2000)])
    targets = [" ".join(rng.choice(vocab, 3, replace=False)) for _ in range(max(rows // 2, 4))]
    out = []
    for i in range(rows):
        t = targets[int(rng.integers(len(targets)))]
        q = f"{rng.choice(t.split())} {rng.choice(vocab)}"
        out.append(
            {
                "id": f"QC-{i}",
                "task": "QC",
                "language": "en",
                "query": q,
                "target": t,
                "label": int(rng.random() < 0.7),
                "source_id": "",
            }
        )
    return pd.DataFrame(out)


def relevance_stages(engine: str, rows: int, workers: int, cache: str) -> dict[str, float]:
    """Seconds of mining (semantic negatives, HashingEncoder) and translation
    augmentation (3 target languages) on ``rows`` labelled rows; a stage whose Ray
    version is not importable is left out."""
    from noiseforge.relevance.augment import augment_translations
    from noiseforge.relevance.embed import HashingEncoder
    from noiseforge.relevance.fixture import make_fixture
    from noiseforge.relevance.mining import mine_semantic_negatives

    df = make_fixture("QC", rows, seed=5, languages=("en", "fr", "es"))
    pool = mining_table(rows, seed=5)
    enc = HashingEncoder(dim=64)
    mkw = dict(
        progress=False,
        cache_dir=Path(cache) / f"mine-{uuid.uuid4().hex[:8]}",
        positive_share=None,  # mine for every positive row
        rank_window=(2, 20),
        ratio=1.5,
    )
    t: dict[str, float] = {}
    targets = ["de", "it", "pl"]
    translator = WordTranslator()
    if engine == "local":
        t["mining"] = timed(lambda: mine_semantic_negatives(pool, enc, **mkw))
        t["augment"] = timed(lambda: augment_translations(df, targets, translator, progress=False))
        return t
    try:
        from noiseforge.distributed.mining import mine_semantic_negatives_ray

        t["mining"] = timed(
            lambda: mine_semantic_negatives_ray(pool, enc, shards=workers, workers=workers, **mkw)
        )
    except ImportError:
        pass
    try:
        from noiseforge.distributed.augment import augment_translations_ray

        t["augment"] = timed(
            lambda: augment_translations_ray(
                df, targets, translator, progress=False, workers=workers
            )
        )
    except ImportError:
        pass
    return t


def block_overhead(n: int, block_counts: Iterable[int]) -> dict[str, Any]:
    """Seconds of an identity ``map_batches`` (0.5-CPU tasks, as noiseforge's) over the
    same ``n`` rows of 784 float32 cut into each number of blocks, and the slope: Ray's
    cost per block."""
    from noiseforge.distributed.ldpkit import private_dataset
    from noiseforge.distributed.runtime import TASK_CPUS

    x = private_rows(n).numpy()
    seconds = {}
    for count in block_counts:
        rows = -(-n // count)
        data = private_dataset(x, block_rows=rows).materialize()
        ident = data.map_batches(
            lambda b: b, batch_size=None, batch_format="numpy", num_cpus=TASK_CPUS
        )
        seconds[count] = timed(lambda ident=ident: ident.materialize())
    counts = np.array(sorted(seconds), dtype=np.float64)
    secs = np.array([seconds[int(c)] for c in counts])
    slope, intercept = np.polyfit(counts, secs, 1)
    return {"seconds": seconds, "per_block_s": float(slope), "fixed_s": float(intercept)}


def release_by_block(n: int, sizes: Iterable[int], folder: Path) -> dict[int, float]:
    """Records/s of ray_release at each block size (the same n rows)."""
    from noiseforge.distributed import ray_release
    from noiseforge.distributed.ldpkit import private_dataset

    x, noise = private_rows(n), noise_spec()
    rate = {}
    for rows in sizes:
        data = private_dataset(x, block_rows=rows).materialize()

        def run(data: Any = data, rows: int = rows) -> None:
            ds, _, _ = ray_release(data, None, new_ledger(folder), noise, seed=7, batch_size=rows)
            ds.materialize()

        rate[rows] = n / timed(run)
    return rate


# ----------------------------------------------------------------------------- one config
def run_config(
    config: str,
    n: int,
    block_rows: int,
    filter_rows: int,
    sweep: bool,
    relevance_rows: int,
    ldp: bool = True,
) -> dict:
    """Every stage of one configuration at n/4 and n records (the body of a child process)."""
    import torch

    engine, cores = config.split("-")
    cores = int(cores)
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    torch.set_num_threads(cores)
    result: dict[str, Any] = {"config": config, "stages": {}, "filter": {}, "relevance": {}}
    load_before = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="nf-bench-"))
    cache = str(folder / "cache")
    proc, url = start_server()
    try:
        if engine == "ray":
            import ray

            from noiseforge.distributed.runtime import connect

            connect(None, num_cpus=cores)
            ray.data.DataContext.get_current().enable_progress_bars = False
            stages = functools.partial(ray_stages, block_rows=block_rows, workers=cores)
            filt = ray_filter
            # warm-up: the task workers and their imports (actor pools start anew per stage,
            # which is part of each stage's fixed cost)
            release_by_block(2 * block_rows, (block_rows,), folder)
            if sweep and ldp:
                result["overhead"] = block_overhead(n, (2, 8, 32, 128, 512))
                result["release_by_block"] = release_by_block(n, (64, 256, 1024, 4096), folder)
        else:
            stages = functools.partial(local_stages, block_rows=block_rows)
            filt = local_filter
            if ldp:
                stages(2 * block_rows, url=url, folder=folder)  # warm-up
            if relevance_rows:
                relevance_stages(engine, max(relevance_rows // 4, 100), cores, cache)
        if relevance_rows:
            for m in (relevance_rows // 4, relevance_rows):
                result["relevance"][m] = relevance_stages(engine, m, cores, cache)
        if filter_rows:
            filt(filter_rows // 4, cache)  # warm-up (and the embedding cache)
            for m in (filter_rows // 4, filter_rows):
                result["filter"][m] = filt(m, cache)
        for m in (n // 4, n) if ldp else ():  # the whole job once, at n
            result["stages"][m] = stages(m, url=url, folder=folder, whole=m == n)
        if engine == "ray":
            ray.shutdown()
    finally:
        stop_server(proc)
    result["load"] = [load_before, os.getloadavg()[0]]
    return result


def hnsw_bytes(n: int, dim: int = 384) -> dict[str, float]:
    """Bytes per vector of an HNSW SQ8 index (M=16) in memory and saved, on n clustered
    embedding-like vectors (``benchmarks/hnsw_recall_qps.py``'s generator)."""
    if str(ROOT) not in sys.path:  # run as a script, the repository root is not on the path
        sys.path.insert(0, str(ROOT))
    from benchmarks.hnsw_recall_qps import clustered
    from noiseforge.index import HNSWIndex

    x = clustered(n, dim, seed=0)
    index = HNSWIndex(dim, metric="ip", M=16, ef_construction=100, quantization="sq8")
    t0 = time.perf_counter()
    index.add(x)
    build = time.perf_counter() - t0
    return {
        "n": n,
        "dim": dim,
        "memory_bytes_per_vector": index.memory_bytes / n,
        "saved_bytes_per_vector": len(index.to_bytes()) / n,
        "build_s": build,
    }


def index_measurement(n: int, path: str | None) -> dict[str, float] | None:
    """:func:`hnsw_bytes` of ``n`` vectors, read from ``path`` when it holds that
    measurement already (it is the same on every run), else measured and written there."""
    if not n:
        return None
    if path and os.path.exists(path):
        saved = json.load(open(path))
        if saved.get("n") == n:
            return saved
    hnsw = hnsw_bytes(n)
    if path:
        with open(path, "w") as fh:
            json.dump(hnsw, fh)
    return hnsw


# ----------------------------------------------------------------------------- the capacity model
@dataclass
class Measured:
    """The measured inputs of :func:`capacity_model` (per node of ``node_cores`` cores,
    marginal rates; defaults are placeholders until a run fills them)."""

    node_cores: int = 2
    release_rps: float = 1e5  # records/s, release stage (charge + noise)
    query_rps: float = 1e4  # records/s, verify + 2 copies + cloud (client side)
    inference_rps: float = 1e5
    filter_rows_per_s: float = 1e3
    # released blocks/s one ledger sustains (charge + bind + check; ledger_throughput.py)
    ledger_blocks_per_s: dict[str, float] = field(default_factory=lambda: {"postgresql": 500.0})
    ray_overhead_per_block_s: float = 0.01
    hnsw_bytes_per_vector: float = 1700.0


def capacity_model(
    m: Measured,
    nodes: int,
    *,
    records: float = 1e8,
    pairs: float = 1e9,
    queries: float = 1e8,
    targets: float = 1e8,
    features: int = FEATURES,
    value_bytes: int = 4,
    classes: int = CLASSES,
    copies: int = 2,
    superimposed: float = 1.0,
    block_rows: int = 4096,
    dim: int = 384,
    k: int = 30,
    node_memory_bytes: float = 64e9,
    pair_row_bytes: float = 200.0,
) -> dict[str, Any]:
    """What a job of ``records`` private records (LDPKiT) and ``pairs`` query-target
    pairs (``queries`` distinct queries, ``targets`` distinct targets: mining and
    filtering) costs on ``nodes`` nodes like the measured one: bytes per stage,
    index shards, the ledger rate needed against the measured one, hours per stage.

    Assumptions: every stage is parallel over blocks, so its rate is the measured
    marginal rate per node times ``nodes``; one ledger for the cluster, one block
    cycle (charge, bind the output digest, the query stage's check) per released
    block, so the release runs at the slower of its compute and the ledger;
    the fewest HNSW shards whose index fits half a node's memory (each query's
    vector goes to every shard, so more shards mean more bytes; more search
    actors per shard add throughput, not bytes); ``k`` candidates per query and
    shard come back to be merged (``rank_window``'s upper end).
    """
    row = features * value_bytes
    copy_rows, mixed_rows = records * copies, records * superimposed
    sent_rows = records + copy_rows + mixed_rows  # every row asked of the cloud
    blocks = math.ceil(records / block_rows)
    cluster_release = m.release_rps * nodes
    blocks_needed = cluster_release / block_rows  # ledger block cycles/s at full speed
    ledger_hours = {kind: blocks / rate / 3600 for kind, rate in m.ledger_blocks_per_s.items()}
    index_bytes = targets * m.hnsw_bytes_per_vector
    shards = max(1, math.ceil(index_bytes / (node_memory_bytes / 2)))
    return {
        "nodes": nodes,
        "block_rows": block_rows,
        "blocks": blocks,
        "ldpkit": {
            # layer 1: private rows -> release tasks -> object store -> query actors
            "released_bytes": records * row,
            # drawn inside the query actors from the verified block: never moved
            "noise_copy_bytes": copy_rows * row,
            "superimposed_bytes": mixed_rows * row,
            "bytes_to_cloud": sent_rows * row,
            "answer_bytes": sent_rows * classes * 4,
            # what ldpkit_ray gathers on the driver for the one-worker training
            "training_set_bytes": sent_rows * (row + classes * 4),
            "release_hours": records / cluster_release / 3600,
            "release_ledger_bound_hours": ledger_hours,
            "query_hours": records / (m.query_rps * nodes) / 3600,
            "inference_hours": records / (m.inference_rps * nodes) / 3600,
            "ray_overhead_hours": blocks * m.ray_overhead_per_block_s / nodes / 3600,
        },
        "ledger": {
            "blocks_per_s_needed": blocks_needed,
            "blocks_per_s_measured": dict(m.ledger_blocks_per_s),
            "headroom": {kind: v / blocks_needed for kind, v in m.ledger_blocks_per_s.items()},
            # the smallest block that keeps the ledger from slowing the release
            "min_block_rows": {
                kind: math.ceil(cluster_release / v) for kind, v in m.ledger_blocks_per_s.items()
            },
        },
        "relevance": {
            "embedding_bytes": (queries + targets) * dim * 4,
            "index_bytes": index_bytes,
            "shards": shards,
            "shard_bytes": index_bytes / shards,
            "search_actors_per_shard": max(1, nodes // shards),
            "query_fanout_bytes": queries * dim * 4 * shards,
            "merge_bytes": queries * k * shards * 12,  # (id int64, score float32)
            "pair_table_bytes": pairs * pair_row_bytes,
            "filter_hours": pairs / (m.filter_rows_per_s * nodes) / 3600,
        },
    }


def node_rate(local_rps: float, per_block_s: float, block_rows: int) -> float:
    """A Ray node's steady rate for a stage: the local engine's marginal rate on the
    same cores, plus Ray's cost per block spread over the block's rows."""
    return 1.0 / (1.0 / local_rps + per_block_s / block_rows)


def measured_from(
    results: dict,
    ledger_json: str | None,
    hnsw: dict | None,
    block_rows: int = 4096,
    node: str = "local-2",
) -> Measured:
    """The model's inputs from this run. A node's steady rate per stage is
    :func:`node_rate` of the local engine's marginal rate on the node's cores
    (``node``) and Ray's measured cost per block: at the sizes this machine runs, a
    Ray stage's time is mostly its fixed start-up, so its own marginal rate is too
    noisy to extrapolate (both are reported). The query stage is the HTTP one (the
    cloud in its own process, here on the same cores)."""
    m = Measured()
    over = results.get("overhead", {}).get("per_block_s")
    if over:
        m.ray_overhead_per_block_s = float(np.median(over))
    rates = results.get("marginal", {}).get(node, {})

    def rate(stage: str, default: float, blocks: bool = True) -> float:
        local = rates.get(stage, {}).get("median")
        if not local:
            return default
        return node_rate(local, m.ray_overhead_per_block_s, block_rows) if blocks else local

    m.release_rps = rate("release", m.release_rps)
    m.query_rps = rate("query-http", m.query_rps)
    m.inference_rps = rate("inference", m.inference_rps)
    m.filter_rows_per_s = rate("filter", m.filter_rows_per_s, blocks=False)
    if hnsw:
        m.hnsw_bytes_per_vector = hnsw["saved_bytes_per_vector"]
    if ledger_json and os.path.exists(ledger_json):
        ledger = json.load(open(ledger_json))
        m.ledger_blocks_per_s = {
            store: v for store, v in ledger.get("blocks_per_s", {}).items() if v
        }
    return m


# ----------------------------------------------------------------------------- report
def _summary(values: list[float], fmt: str = ".0f") -> str:
    """median (min-max) of the finite values, with how many runs had none."""
    bad = sum(1 for v in values if not math.isfinite(v))
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "-"
    if bad:
        return f"{np.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}}) {bad}?"
    return f"{np.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def _split(t_small: float, t_big: float, n_small: int, n_big: int) -> tuple[float, float]:
    """(marginal items/s, fixed seconds) of T(n) = fixed + n / rate from two sizes."""
    dt = t_big - t_small
    if dt <= 0:  # the sizes' difference drowned in the noise: no estimate
        return float("nan"), float("nan")
    rate = (n_big - n_small) / dt
    return rate, t_small - n_small / rate


def summarise(runs: list[dict]) -> dict:
    """Per config and stage: wall records/s at n, marginal records/s, fixed seconds."""
    out: dict[str, Any] = {"wall": {}, "marginal": {}, "fixed": {}, "overhead": {}}
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["config"], []).append(r)
    for config, rs in by.items():
        wall: dict[str, list[float]] = {}
        marg: dict[str, list[float]] = {}
        fixed: dict[str, list[float]] = {}
        for r in rs:
            for key, table in (("stages", None), ("filter", "filter"), ("relevance", None)):
                sizes = sorted(int(s) for s in r.get(key, {}))
                if len(sizes) < 2:
                    continue
                small, big = r[key][str(sizes[0])], r[key][str(sizes[-1])]
                names = [table] if table else list(big)
                for name in names:
                    tb = big if table else big[name]
                    wall.setdefault(name, []).append(sizes[-1] / tb)
                    if not table and name not in small:  # measured at n only
                        continue
                    ts = small if table else small[name]
                    rate, f = _split(ts, tb, sizes[0], sizes[-1])
                    marg.setdefault(name, []).append(rate)
                    fixed.setdefault(name, []).append(f)
            if "overhead" in r:
                out["overhead"].setdefault("per_block_s", []).append(r["overhead"]["per_block_s"])
                out["overhead"].setdefault("seconds", []).append(r["overhead"]["seconds"])
            if "release_by_block" in r:
                out.setdefault("release_by_block", []).append(r["release_by_block"])

        def stats(d: dict[str, list[float]]) -> dict[str, dict[str, float]]:
            out = {}
            for k, v in d.items():
                v = [x for x in v if math.isfinite(x)]
                if v:
                    out[k] = {"median": float(np.median(v)), "min": min(v), "max": max(v)}
            return out

        out["wall"][config] = stats(wall)
        out["marginal"][config] = stats(marg)
        out["fixed"][config] = stats(fixed)
        out.setdefault("raw", {})[config] = {"wall": wall, "marginal": marg, "fixed": fixed}
    return out


def knee(release_by_block: list[dict], per_block_s: float, row_s: float) -> dict[str, Any]:
    """Where Ray's per-block overhead stops dominating: the block size c / t_row at which
    the fixed cost c of a block equals its rows' work, and the smallest measured block
    size whose release throughput reaches 90 % of the best."""
    med = {}
    for size in {int(s) for r in release_by_block for s in r}:
        med[size] = float(np.median([r[str(size)] for r in release_by_block if str(size) in r]))
    best = max(med.values()) if med else 0.0
    reached = [s for s, v in sorted(med.items()) if v >= 0.9 * best]
    return {
        "release_rps_by_block": med,
        "break_even_rows": per_block_s / row_s if row_s > 0 else None,
        "block_rows_at_90pct": reached[0] if reached else None,
    }


def print_report(summary: dict, n: int, filter_rows: int) -> None:
    configs = [c for c in ("local-1", "local-2", "ray-1", "ray-2") if c in summary["wall"]]
    print(f"\nLDPKiT stages, {n} records of {FEATURES} features (filter: {filter_rows} rows)")
    print("records/s at n (wall), median (min-max) over the runs")
    print(f"{'stage':12s}" + "".join(f"{c:>26s}" for c in configs))
    for stage in ALL_STAGES:
        print(
            f"{stage:12s}"
            + "".join(f"{_summary(summary['raw'][c]['wall'].get(stage, [])):>26s}" for c in configs)
        )
    print("\nmarginal records/s (rate of a long job: (n - n/4) / (T(n) - T(n/4)))")
    print(f"{'stage':12s}" + "".join(f"{c:>26s}" for c in configs))
    for stage in ALL_STAGES:
        print(
            f"{stage:12s}"
            + "".join(
                f"{_summary(summary['raw'][c]['marginal'].get(stage, [])):>26s}" for c in configs
            )
        )
    print("\nfixed seconds per stage (start-up: actors, scheduling; T(n/4) - (n/4) / rate)")
    print(f"{'stage':12s}" + "".join(f"{c:>26s}" for c in configs))
    for stage in ALL_STAGES:
        print(
            f"{stage:12s}"
            + "".join(
                f"{_summary(summary['raw'][c]['fixed'].get(stage, []), '.2f'):>26s}"
                for c in configs
            )
        )
    over = summary.get("overhead", {})
    if over.get("per_block_s"):
        print(
            f"\nRay overhead per block (identity map_batches, slope over 2..512 blocks): "
            f"{_summary([v * 1e3 for v in over['per_block_s']], '.1f')} ms"
        )
    if "knee" in summary:
        k = summary["knee"]
        print(
            "ray_release records/s by block size: "
            + ", ".join(f"{s}: {v:.0f}" for s, v in sorted(k["release_rps_by_block"].items()))
        )
        sizes = sorted(k["release_rps_by_block"])
        at = k["block_rows_at_90pct"]
        reach = (
            f"reaches 90 % of its best at {at} rows/block"
            if at is not None and at != sizes[-1]
            else f"still rises at {sizes[-1]} rows/block (the knee is beyond it)"
        )
        even = k["break_even_rows"]
        print(
            "knee of the release: "
            + (f"per-block cost = the rows' work at ~{even:.0f} rows; " if even else "")
            + reach
        )


def print_capacity(m: Measured, nodes_list: Iterable[int], block_rows: int) -> list[dict]:
    """The capacity model's table for each node count (and return its rows)."""
    rows = [capacity_model(m, nodes, block_rows=block_rows) for nodes in nodes_list]
    gb = 1e9
    print(
        f"\ncapacity model: 100M records x {FEATURES} float32 (2 copies, 1 pair per record), "
        f"1B pairs (100M queries, 100M targets, 384-d); block_rows={block_rows}"
    )
    lk, rv = rows[0]["ldpkit"], rows[0]["relevance"]
    print(
        f"bytes: released {lk['released_bytes'] / gb:.0f} GB; noise copies "
        f"{lk['noise_copy_bytes'] / gb:.0f} GB (drawn in the query actors, not moved); "
        f"superimposed {lk['superimposed_bytes'] / gb:.0f} GB; to the cloud "
        f"{lk['bytes_to_cloud'] / gb:.0f} GB; answers {lk['answer_bytes'] / gb:.0f} GB; "
        f"training set {lk['training_set_bytes'] / gb:.0f} GB\n"
        f"       embeddings {rv['embedding_bytes'] / gb:.0f} GB; HNSW SQ8 index "
        f"{rv['index_bytes'] / gb:.0f} GB ({m.hnsw_bytes_per_vector:.0f} B/vector) in "
        f"{rv['shards']} shards of {rv['shard_bytes'] / gb:.0f} GB; query fan-out "
        f"{rv['query_fanout_bytes'] / gb:.0f} GB; merge {rv['merge_bytes'] / gb:.0f} GB; "
        f"pair table {rv['pair_table_bytes'] / gb:.0f} GB"
    )
    kinds = list(m.ledger_blocks_per_s)
    print(
        f"{'nodes':>6s} {'release h':>10s} "
        + " ".join(f"{'(' + kind[:6] + '-bound)':>16s}" for kind in kinds)
        + f" {'query h':>8s} {'infer h':>8s} {'filter h':>9s} {'ledger blk/s':>13s} "
        + " ".join(f"{'min block ' + kind[:6]:>17s}" for kind in kinds)
    )
    for r in rows:
        lk, rv, lg = r["ldpkit"], r["relevance"], r["ledger"]
        print(
            f"{r['nodes']:6d} {lk['release_hours']:10.3f} "
            + " ".join(f"{lk['release_ledger_bound_hours'][kind]:16.3f}" for kind in kinds)
            + f" {lk['query_hours']:8.2f} {lk['inference_hours']:8.3f} "
            f"{rv['filter_hours']:9.1f} {lg['blocks_per_s_needed']:13.1f} "
            + " ".join(f"{lg['min_block_rows'][kind]:17d}" for kind in kinds)
        )
    return rows


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8192, help="private records per stage (and n/4)")
    ap.add_argument("--block-rows", type=int, default=1024)
    ap.add_argument("--filter-rows", type=int, default=1200)
    ap.add_argument(
        "--relevance-rows", type=int, default=2000, help="rows for mining/augment (0: skip)"
    )
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--hnsw-n", type=int, default=100_000, help="0: skip the index measurement")
    ap.add_argument(
        "--hnsw-json", default=None, help="reuse the index measurement in this file (or write it)"
    )
    ap.add_argument("--hnsw-only", action="store_true", help="measure the index only")
    ap.add_argument("--ledger-json", default=None, help="output of ledger_throughput.py --json")
    ap.add_argument("--json", default=None, help="write every measurement here")
    ap.add_argument(
        "--from-json", default=None, help="report (and model) the runs saved by an earlier --json"
    )
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)  # a child's config
    ap.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--parts", default="ldp,filter,relevance", help="what to measure: ldp, filter, relevance"
    )
    args = ap.parse_args()
    if args.config:
        result = run_config(
            args.config,
            args.n,
            args.block_rows,
            args.filter_rows if "filter" in args.parts else 0,
            args.sweep,
            args.relevance_rows if "relevance" in args.parts else 0,
            "ldp" in args.parts,
        )
        print("RESULT " + json.dumps(result, default=str), flush=True)
        return
    if args.hnsw_only:
        hnsw = index_measurement(args.hnsw_n, args.hnsw_json)
        print(json.dumps(hnsw))
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("this benchmark pins its configurations to 1 and 2 cores: it needs 2")
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown --configs {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    runs: list[dict] = []
    t_start = time.perf_counter()
    if args.from_json:
        saved = json.load(open(args.from_json))
        runs = saved["runs"]
        if saved.get("hnsw") and not args.hnsw_json:
            args.hnsw_json = args.from_json + ".hnsw.json"
            with open(args.hnsw_json, "w") as fh:
                json.dump(saved["hnsw"], fh)
    for r in range(0 if args.from_json else args.repeat):
        for config in configs:
            cmd = [sys.executable, __file__, "--config", config, "--n", str(args.n)]
            cmd += ["--block-rows", str(args.block_rows), "--filter-rows", str(args.filter_rows)]
            cmd += ["--relevance-rows", str(args.relevance_rows), "--parts", args.parts]
            if config == "ray-2":
                cmd.append("--sweep")
            t0 = time.perf_counter()
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.stderr.write(proc.stderr[-4000:])
                print(f"run {r + 1} of {config} FAILED (exit {proc.returncode})", flush=True)
                continue
            runs.append(json.loads(lines[-1][len("RESULT ") :]))
            print(
                f"run {r + 1} {config}: {time.perf_counter() - t0:.0f} s "
                f"(load average {runs[-1]['load'][0]:.1f} -> {runs[-1]['load'][1]:.1f})",
                flush=True,
            )
            if args.json:  # what is measured so far survives an interrupted run
                with open(args.json + ".partial", "w") as fh:
                    json.dump({"args": vars(args), "runs": runs}, fh, default=str)
    summary = summarise(runs)
    if summary.get("release_by_block") and summary["overhead"].get("per_block_s"):
        local_release = summary["marginal"].get("local-1", {}).get("release", {}).get("median")
        row_s = 1.0 / local_release if local_release else 0.0
        summary["knee"] = knee(
            summary["release_by_block"], float(np.median(summary["overhead"]["per_block_s"])), row_s
        )
    print_report(summary, args.n, args.filter_rows)
    per_block = summary["overhead"].get("per_block_s")
    if per_block:
        c = float(np.median(per_block))
        local = summary["marginal"].get("local-1", {})
        print(
            "knee per stage (block rows at which Ray's per-block cost equals the rows' work "
            "on one core: overhead x local-1 marginal rate):"
        )
        print(
            "  "
            + ", ".join(
                f"{stage} {c * v['median']:.0f}"
                for stage, v in local.items()
                if stage in LDP_STAGES
            )
        )
    hnsw = index_measurement(args.hnsw_n, args.hnsw_json)
    if hnsw:
        print(
            f"\nHNSW SQ8 (M=16) on {hnsw['n']} x {hnsw['dim']}: "
            f"{hnsw['memory_bytes_per_vector']:.0f} B/vector in memory, "
            f"{hnsw['saved_bytes_per_vector']:.0f} B/vector saved (build {hnsw['build_s']:.0f} s)"
        )
    m = measured_from(summary, args.ledger_json, hnsw, block_rows=4096)
    print(f"\nmodel inputs: {asdict(m)}")
    capacity = print_capacity(m, (1, 4, 16, 64), block_rows=4096)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s, {os.cpu_count()} CPU cores")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "runs": runs,
                    "summary": summary,
                    "hnsw": hnsw,
                    "model_inputs": asdict(m),
                    "capacity": capacity,
                },
                fh,
                indent=1,
                default=str,
            )


if __name__ == "__main__":
    main()
