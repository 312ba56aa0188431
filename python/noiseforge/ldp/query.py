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
from typing import Any

import torch
from tqdm.auto import tqdm

from noiseforge._files import atomic_write
from noiseforge.ldp.cloud import CloudModel, CloudRequestError
from noiseforge.ldp.release import NoisedBatch

CHECKPOINT_FORMAT = "noiseforge.cloud-answers/1"
SUM_TOLERANCE = 1e-3  # |row sum - 1| allowed (float32 softmax outputs are within ~1e-6)


class CloudQueryError(RuntimeError):
    """The cloud kept failing; the answers finished so far are in the checkpoint."""


class CloudAnswerError(CloudQueryError):
    """An answer of the cloud is not a valid table of class probabilities."""


def check_answers(answer: Any, rows: int, classes: int | None = None) -> torch.Tensor:
    """``answer`` as a (rows, C) float32 CPU tensor, or CloudAnswerError saying what is wrong.

    Valid: a 2-D floating tensor with ``rows`` rows and ``classes`` columns (if
    given, else >= 1), every value finite and >= 0, every row summing to 1
    within ``SUM_TOLERANCE``.
    """
    if not isinstance(answer, torch.Tensor):
        raise CloudAnswerError(f"the cloud answered a {type(answer).__name__}, not a tensor")
    if answer.dim() != 2 or answer.shape[0] != rows:
        raise CloudAnswerError(
            f"the cloud answered shape {tuple(answer.shape)} for {rows} rows (expected "
            f"({rows}, classes))"
        )
    if classes is not None and answer.shape[1] != classes:
        raise CloudAnswerError(
            f"the cloud answered {answer.shape[1]} classes, earlier answers had {classes}"
        )
    if answer.shape[1] < 1:
        raise CloudAnswerError("the cloud answered 0 classes")
    if not answer.is_floating_point():
        raise CloudAnswerError(f"the cloud answered dtype {answer.dtype}, not probabilities")
    a = answer.detach().to("cpu", torch.float32).contiguous()
    if rows == 0:
        return a
    finite = torch.isfinite(a)
    if not bool(finite.all()):
        r, c = (int(v) for v in torch.nonzero(~finite)[0])
        raise CloudAnswerError(f"the cloud answered {float(a[r, c])} for row {r}, class {c}")
    if bool((a < 0).any()):
        r, c = (int(v) for v in torch.nonzero(a < 0)[0])
        raise CloudAnswerError(
            f"the cloud answered a negative probability {float(a[r, c])} (row {r}, class {c})"
        )
    sums = a.double().sum(1)
    off = (sums - 1).abs() > SUM_TOLERANCE
    if bool(off.any()):
        r = int(torch.nonzero(off)[0])
        raise CloudAnswerError(
            f"the cloud's probabilities for row {r} sum to {float(sums[r]):.6g}, not 1"
        )
    return a


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
    if isinstance(kept_rows, bool) or not isinstance(kept_rows, int) or kept_rows != rows:
        raise ValueError(f"{path} was written for {kept_rows!r} rows, this set has {rows}; {hint}")
    if not isinstance(answers, torch.Tensor) or answers.dim() != 2:
        raise ValueError(f"{path} holds no (rows, classes) answers table; {hint}")
    if answers.shape[0] > rows:
        raise ValueError(
            f"{path} holds {answers.shape[0]} answers for a query set of {rows} rows; {hint}"
        )
    if state.get("classes") != answers.shape[1]:
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    if not (isinstance(backoff, int | float) and math.isfinite(backoff) and backoff >= 0):
        raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
    m = len(batch)
    path = Path(checkpoint) if checkpoint is not None else None
    digest = batch.digest
    done: list[torch.Tensor] = []
    classes: int | None = None
    start = 0
    if path is not None and path.exists():
        kept = _load_checkpoint(path, digest, m)
        if len(kept):
            done, classes, start = [kept], kept.shape[1], kept.shape[0]
    bar = tqdm(total=m, initial=start, desc="querying the cloud", disable=not progress, leave=False)
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
            return check_answers(cloud.predict(part), len(part), classes)
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
