"""backends/units.py: the one duration parser and formatters, `reveal` and `display_url`, and the
modules that use them instead of copies of their own (issue 16)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from backends import units
from backends.config import Secret
from backends.errors import MASK


def test_parse_duration():
    p = units.parse_duration
    assert p("500ms") == 0.5 and p("10s") == 10 and p("5m") == 300 and p("2h") == 7200 and p("1d") == 86400
    assert p("1h30m") == 5400 and p("1h 30m") == 5400 and p(" 10 M ") == 600 and p("10") == 10
    assert p(7) == 7.0 and p(0.25) == 0.25 and p(timedelta(minutes=2)) == 120 and p("0m") == 0


@pytest.mark.parametrize("bad", ["5 minutes", "10x", "-1s", "s", "", "1h 5", -5, timedelta(seconds=-1),
                                 math.nan, math.inf, True, None, [1]])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        units.parse_duration(bad)


def test_format_duration_and_age():
    f = units.format_duration
    assert (f(0.5), f(600), f(5400), f(86400), f(0), f(65)) == ("500ms", "10m", "1h30m", "1d", "0s", "1m5s")
    a = units.format_age
    assert (a(None), a(42), a(65), a(3725), a(2 * 86400 + 4 * 3600)) == ("?", "42s", "1m05s", "1h02m", "2d04h")
    assert a(300) == "5m00s"  # as the Postgres finding has always said ("running > 5m00s")


def test_reveal():
    s = Secret("units-secret-4141")
    assert units.reveal(s) == "units-secret-4141" and units.reveal(None) == "" and units.reveal(5) == "5"
    assert str(s) == MASK


@pytest.mark.parametrize("url,shown", [
    ("https://u:p4ssword@example.invalid:8443/x?key=1", "https://u:********@example.invalid:8443/x?…"),
    ("redis://:Secr3tPass@127.0.0.1:6379/0", "redis://:********@127.0.0.1:6379/0"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ("http://[::1]:8080/health", "http://[::1]:8080/health"),
    ("http://user@host/x", "http://user@host/x"),
])
def test_display_url(url, shown):
    assert units.display_url(url) == shown
    assert units.display_url(Secret(url, url_parts=True)) == shown


def test_display_url_of_a_bad_port_does_not_raise():
    assert "99999" in units.display_url("http://127.0.0.1:99999/")


def test_the_modules_use_the_one_helper():
    from backends import config
    from backends.sources import logs, orders, postgres, redis

    assert config.parse_duration is orders.parse_duration is logs.parse_duration is units.parse_duration
    assert config.format_duration is units.format_duration
    assert orders.fmt_age is postgres._fmt_duration is units.format_age
    assert postgres.reveal is redis.reveal is units.reveal
    assert redis.display_url is units.display_url
    assert redis._fmt_s(None) == "-" and redis._fmt_s(65) == "1m05s"
    assert logs._seconds(None, 300.0) == 300.0 and logs._seconds("", None) is None and logs._seconds("2m") == 120
