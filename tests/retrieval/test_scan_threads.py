"""``HASHAUDIT_THREADS`` (threads of the compiled Hamming scan, retrieval.scan.threads): a value
that is not a whole number is one RetrievalError naming the variable and the fix (exit 2 in a
stage), not a ValueError traceback from deep inside a search (exit 1)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import scan
from retrieval.codes import pack_bits
from retrieval.errors import RetrievalError
from retrieval.search import HammingIndex


@pytest.mark.parametrize("value", ["four", "2.5", "auto"])
def test_threads_that_are_not_a_whole_number_are_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("HASHAUDIT_THREADS", value)
    pattern = rf"^HASHAUDIT_THREADS='{value}' is not a whole number; .*HASHAUDIT_THREADS=4.*unset"
    with pytest.raises(RetrievalError, match=pattern):
        scan.threads()
    g = np.random.default_rng(0)
    index = HammingIndex(pack_bits(g.random((50, 12)) > 0.5), 12)
    with pytest.raises(RetrievalError, match=pattern):  # the search a stage runs
        index.search(pack_bits(g.random((3, 12)) > 0.5), 5)


def test_whole_numbers_still_set_the_threads_and_results_do_not_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = np.random.default_rng(1)
    bits_db, bits_q = g.random((400, 10)) > 0.5, g.random((70, 10)) > 0.5
    index = HammingIndex(pack_bits(bits_db), 10)
    d = (bits_q[:, None] != bits_db[None]).sum(-1)
    want = np.lexsort((np.broadcast_to(np.arange(400), d.shape), d), axis=-1)[:, :6]
    for value, threads in (("3", 3), (" 2 ", 2), ("0", 1), ("-4", 1)):
        monkeypatch.setenv("HASHAUDIT_THREADS", value)
        assert scan.threads() == threads
        np.testing.assert_array_equal(index.search(pack_bits(bits_q), 6)[1], want)
