"""The argument checks of ``noiseforge._common.validation``."""

from __future__ import annotations

import numpy as np
import pytest

from noiseforge._common.validation import check_int, is_int


def test_is_int_takes_python_and_numpy_integers_but_no_bool():
    assert all(is_int(v) for v in (0, -3, 2**70, np.int64(5), np.uint8(1)))
    assert not any(is_int(v) for v in (True, np.bool_(True), 1.0, "1", None))


def test_check_int_returns_an_int_and_names_the_argument():
    value = check_int("k", np.int32(4), 1)
    assert value == 4 and type(value) is int
    with pytest.raises(ValueError, match=r"k must be an int >= 1, got 0"):
        check_int("k", 0, 1)
    with pytest.raises(ValueError, match=r"port must be an int in \[0, 65535\], got 70000"):
        check_int("port", 70000, 0, 65535)
    with pytest.raises(ValueError, match=r"n must be an int <= 3, got 4 \(at most three\)"):
        check_int("n", 4, None, 3, hint=" (at most three)")


@pytest.mark.parametrize("bad", [True, 2.0, "2", None])
def test_check_int_refuses_non_integers_with_the_error_asked_for(bad):
    with pytest.raises(ValueError, match="retries must be an int, got"):
        check_int("retries", bad, 0)
    with pytest.raises(TypeError, match="k must be an int, got"):
        check_int("k", bad, 1, error=TypeError)
