"""Step 4 of LDPKiT: asking the cloud about a (large) noised query set.

Queries go out in batches with a progress bar; a batch that fails is retried
with exponential back-off; finished answers are checkpointed to disk after
every batch, so a run that stops (a dead cloud, a crash) resumes where it
stopped instead of asking -- and paying -- again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from noiseforge.ldp.cloud import CloudModel
from noiseforge.ldp.release import NoisedBatch


class CloudQueryError(RuntimeError):
    """The cloud kept failing; the answers finished so far are in the checkpoint."""


def query_cloud(
    cloud: CloudModel,
    batch: NoisedBatch,
    *,
    batch_size: int = 1024,
    retries: int = 3,
    backoff: float = 0.5,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """(M, C) cloud probabilities for every row of ``batch``.

    ``checkpoint``: a file that keeps the answers finished so far (and the
    number of rows, to refuse resuming a different query set). Raises
    CloudQueryError after ``retries`` failed attempts of one batch.
    """
    if not isinstance(batch, NoisedBatch):
        raise TypeError("query_cloud sends a NoisedBatch (released data), not raw data")
    if batch_size < 1 or retries < 0:
        raise ValueError("batch_size must be >= 1 and retries >= 0")
    m = len(batch)
    path = Path(checkpoint) if checkpoint is not None else None
    done: list[torch.Tensor] = []
    start = 0
    if path is not None and path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if int(state["rows"]) != m:
            raise ValueError(
                f"{path} holds answers for {int(state['rows'])} rows, this query set has "
                f"{m}: use a new checkpoint file"
            )
        done = [state["answers"]]
        start = state["answers"].shape[0]
    bar = tqdm(total=m, initial=start, desc="querying the cloud", disable=not progress, leave=False)
    for s in range(start, m, batch_size):
        part = batch.derive(batch.data[s : s + batch_size], batch.records[s : s + batch_size])
        for attempt in range(retries + 1):
            try:
                answer = cloud.predict(part).float().cpu()
                break
            except (OSError, RuntimeError, TimeoutError) as exc:  # transport or server errors
                if attempt == retries:
                    bar.close()
                    where = f"; {s} answers are kept in {path}" if path is not None else ""
                    raise CloudQueryError(
                        f"the cloud failed {retries + 1} times on rows {s}..{s + len(part) - 1} "
                        f"({exc}){where}"
                    ) from exc
                time.sleep(backoff * 2**attempt)
        done.append(answer)
        if path is not None:
            tmp = path.with_suffix(path.suffix + ".tmp")
            torch.save({"rows": m, "answers": torch.cat(done)}, tmp)
            os.replace(tmp, path)
        bar.update(len(part))
    bar.close()
    return torch.cat(done) if done else torch.zeros((0, 0))
