"""Step 4 of LDPKiT: asking the cloud about a (large) noised query set.

Queries go out in batches with a progress bar. Every batch of answers is
checked before it is kept (a (rows, C) array of finite, non-negative
probabilities that sum to 1, with the same C in every batch); a batch that
fails -- a transport error, a server error, an answer that fails the check --
is retried with exponential back-off and then reported as CloudQueryError.
Finished answers are checkpointed after every batch, bound to the digest of
the query set, so a run that stops (a dead cloud, a crash) resumes where it
stopped -- and a checkpoint of another query set is refused, never reused.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from noiseforge._common.files import atomic_write
from noiseforge._common.validation import check_int, is_int
from noiseforge._progress import progress_bar
from noiseforge.ldp.cloud import (
    CloudAnswerError,
    CloudModel,
    CloudQueryError,
    CloudRequestError,
    check_answers,
)
from noiseforge.ldp.release import NoisedBatch

CHECKPOINT_FORMAT = "noiseforge.cloud-answers/1"
__all__ = ["CloudAnswerError", "CloudQueryError", "check_answers", "query_cloud"]


def _load_checkpoint(path: Path, digest: str, rows: int) -> torch.Tensor:
    """The answers kept in ``path`` for the query set ``digest`` of ``rows`` rows."""
    hint = "delete it to start over, or use a new checkpoint file"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: any unpickling error
        raise ValueError(f"{path} is not a readable answers checkpoint ({exc}); {hint}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a noiseforge answers checkpoint; {hint}")
    if state.get("query_digest") != digest:
        raise ValueError(
            f"{path} holds answers for another query set (digest "
            f"{str(state.get('query_digest'))[:16]}..., this one {digest[:16]}...): answers "
            f"belong to the rows they were asked about; {hint}"
        )
    answers, kept_rows = state.get("answers"), state.get("rows")
    if not is_int(kept_rows) or kept_rows != rows:
        raise ValueError(f"{path} was written for {kept_rows!r} rows, this set has {rows}; {hint}")
    if (
        not isinstance(answers, torch.Tensor)
        or answers.layout != torch.strided
        or answers.dim() != 2
        or not answers.is_contiguous()  # a stride-0 view could claim any size from a tiny file
    ):
        raise ValueError(f"{path} holds no dense (rows, classes) answers table; {hint}")
    if answers.shape[0] > rows:
        raise ValueError(
            f"{path} holds {answers.shape[0]} answers for a query set of {rows} rows; {hint}"
        )
    classes = state.get("classes")
    if not is_int(classes) or classes != answers.shape[1]:
        raise ValueError(f"{path}: its class count disagrees with its answers; {hint}")
    try:
        return check_answers(answers, answers.shape[0])
    except CloudAnswerError as exc:
        raise ValueError(f"{path} holds invalid answers ({exc}); {hint}") from None


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
    """(M, C) cloud probabilities (float32) for every row of ``batch``.

    ``checkpoint``: a file that keeps the answers finished so far, bound to the
    query set's digest; a run with the same query set resumes from it and asks
    only for the missing rows, any other query set is refused. A batch is tried
    ``retries + 1`` times (transport failures, server errors and invalid
    answers alike), waiting ``backoff * 2**attempt`` seconds in between.

    Raises
    ------
    CloudQueryError
        A batch kept failing (the message says why; the answers so far are in
        the checkpoint). CloudAnswerError, its subclass, when the last failure
        was an invalid answer.
    TypeError, ReleaseIntegrityError
        ``batch`` is not released data, or its rows were changed after release
        (never retried: nothing is sent).
    ValueError
        Bad arguments, or a checkpoint that does not belong to this query set.
    """
    if not isinstance(batch, NoisedBatch):
        raise TypeError("query_cloud sends a NoisedBatch (released data), not raw data")
    if not isinstance(cloud, CloudModel):
        raise TypeError(
            f"cloud must be a noiseforge.ldp.CloudModel, got {type(cloud).__name__}: subclass "
            "CloudModel and implement _predict(data), which receives the checked released rows"
        )
    batch_size = check_int("batch_size", batch_size, 1)
    retries = check_int("retries", retries, 0)
    if not (isinstance(backoff, int | float) and math.isfinite(backoff) and backoff >= 0):
        raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
    m = len(batch)
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and not path.parent.is_dir():
        raise FileNotFoundError(
            f"the checkpoint's folder {path.parent} does not exist; create it first"
        )
    digest = batch.digest
    done: list[torch.Tensor] = []
    classes: int | None = None
    start = 0
    if path is not None and path.exists():
        kept = _load_checkpoint(path, digest, m)
        if len(kept):
            done, classes, start = [kept], kept.shape[1], kept.shape[0]
    bar = progress_bar(
        total=m, initial=start, desc="querying the cloud", enabled=progress, unit="rows"
    )
    try:
        for s in range(start, m, batch_size):
            part = batch._rows(s, min(m, s + batch_size))
            answer = _ask(cloud, part, s, classes, retries, backoff, path)
            classes = answer.shape[1]
            done.append(answer)
            if path is not None:
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "query_digest": digest,
                    "rows": m,
                    "classes": classes,
                    "answers": torch.cat(done),
                }
                atomic_write(path, lambda fh, state=state: torch.save(state, fh))
            bar.update(len(part))
    finally:
        bar.close()
    return torch.cat(done) if done else torch.zeros((0, 0))


def _ask(
    cloud: CloudModel,
    part: NoisedBatch,
    first: int,
    classes: int | None,
    retries: int,
    backoff: float,
    path: Path | None,
) -> torch.Tensor:
    """One batch's checked answers, after up to ``retries`` retries."""
    where = f"; {first} answers are kept in {path}" if path is not None else ""
    for attempt in range(retries + 1):
        try:
            # the base class's predict, whatever a subclass overrides: it checks the
            # seal on a private copy of the rows and sends exactly that copy
            return CloudModel._answer(cloud, part, classes)
        except CloudRequestError as exc:  # the request itself is wrong: retrying cannot help
            raise CloudQueryError(
                f"the cloud refused rows {first}..{first + len(part) - 1} ({exc}){where}"
            ) from exc
        except (OSError, RuntimeError, TimeoutError) as exc:  # transport, server, bad answer
            if attempt == retries:
                kind = CloudAnswerError if isinstance(exc, CloudAnswerError) else CloudQueryError
                raise kind(
                    f"the cloud failed {retries + 1} times on rows {first}..{first + len(part) - 1}"
                    f" ({exc}){where}"
                ) from exc
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")
