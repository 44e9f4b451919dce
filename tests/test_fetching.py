import urllib.error

import pytest

from avzsl.fetching import FetchError, backoff_seconds, describe, read_bytes, with_retries


def _calls(errors):
    """A call that raises the given errors in turn, then returns 'ok'."""
    seen = []

    def call():
        seen.append(1)
        if len(seen) <= len(errors):
            raise errors[len(seen) - 1]
        return "ok"

    return call, seen


def test_transient_failures_are_retried_with_doubling_waits():
    waits = []
    call, seen = _calls([describe("u", urllib.error.HTTPError("u", 503, "busy", {}, None))] * 2)
    assert with_retries(call, retries=3, backoff=0.5, sleep=waits.append) == "ok"
    assert len(seen) == 3 and waits == [0.5, 1.0]


def test_a_permanent_answer_is_not_retried():
    call, seen = _calls([describe("u", urllib.error.HTTPError("u", 404, "Not Found", {}, None))])
    with pytest.raises(FetchError, match="HTTP 404") as e:
        with_retries(call, retries=3, backoff=0, sleep=lambda s: None)
    assert len(seen) == 1 and not e.value.transient


def test_giving_up_says_how_often_it_tried():
    call, seen = _calls([describe("u", urllib.error.URLError("connection refused"))] * 5)
    with pytest.raises(FetchError, match=r"connection refused \(after 3 attempts\)"):
        with_retries(call, retries=2, backoff=0, sleep=lambda s: None)
    assert len(seen) == 3


def test_backoff_is_capped():
    assert [backoff_seconds(a, 10, 30) for a in range(4)] == [10, 20, 30, 30]


def test_local_sources_and_their_absence(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("x")
    assert read_bytes(f, "vocabulary file") == b"x" and read_bytes(f.as_uri(), "vocabulary file") == b"x"
    with pytest.raises(FetchError, match="vocabulary file not found"):
        read_bytes(tmp_path / "missing.txt", "vocabulary file")
