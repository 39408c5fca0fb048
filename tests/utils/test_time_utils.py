from datetime import datetime, timedelta, timezone

import pytest

from scripts.utils import timestamps
from scripts.utils.errors import InputError
from tests.conftest import json_lines, run_script, single_error

UTC = timezone.utc


def test_canonical_forms():
    moment = datetime(2025, 10, 31, 12, 0, 5, 123456, tzinfo=UTC)
    assert timestamps.format_iso(moment) == "2025-10-31T12:00:05Z"
    assert timestamps.format_iso(moment, "milliseconds") == "2025-10-31T12:00:05.123Z"
    assert timestamps.format_iso(moment, "microseconds") == "2025-10-31T12:00:05.123456Z"
    assert timestamps.format_compact(moment) == "20251031T120005Z"
    assert ":" not in timestamps.format_compact(moment)


@pytest.mark.parametrize(
    "text",
    [
        "2025-10-31T12:00:05Z",
        "2025-10-31T12:00:05.123Z",
        "2025-10-31T12:00:05.123456Z",
        "1970-01-01T00:00:00Z",
    ],
)
def test_iso_round_trip(text):
    timespec = {20: "seconds", 24: "milliseconds", 27: "microseconds"}[len(text)]
    assert timestamps.format_iso(timestamps.parse_timestamp(text), timespec) == text


def test_compact_round_trip_and_datetime_round_trip():
    assert (
        timestamps.format_compact(timestamps.parse_timestamp("20251031T120005Z"))
        == "20251031T120005Z"
    )
    moment = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    assert timestamps.parse_timestamp(timestamps.format_iso(moment, "microseconds")) == moment


def test_offsets_convert_to_utc():
    assert timestamps.parse_timestamp("2025-10-31T13:00:00+01:00") == datetime(
        2025, 10, 31, 12, tzinfo=UTC
    )
    assert timestamps.parse_timestamp("2025-10-31 06:30:00-0530") == datetime(
        2025, 10, 31, 12, tzinfo=UTC
    )
    assert timestamps.parse_timestamp("2025-10-31T12:00:00,5Z").microsecond == 500000


def test_zone_is_required_unless_assumed():
    with pytest.raises(InputError, match="no time zone"):
        timestamps.parse_timestamp("2025-10-31T12:00:00")
    assert timestamps.parse_timestamp("2025-10-31T12:00:00", assume_utc=True).tzinfo == UTC


@pytest.mark.parametrize(
    "text", ["2025-13-01T00:00:00Z", "yesterday", "2025-10-31", "20251031T1200Z"]
)
def test_invalid_timestamps(text):
    with pytest.raises(InputError):
        timestamps.parse_timestamp(text)


def test_source_date_epoch_is_honoured():
    assert timestamps.now({"SOURCE_DATE_EPOCH": "1761912000"}) == datetime(
        2025, 10, 31, 12, tzinfo=UTC
    )
    assert timestamps.run_stamp({"SOURCE_DATE_EPOCH": "0"}) == "19700101T000000Z"
    assert timestamps.source_date_epoch({}) is None
    assert timestamps.source_date_epoch({"SOURCE_DATE_EPOCH": ""}) is None


def test_clock_without_source_date_epoch():
    before = datetime.now(UTC)
    moment = timestamps.now({})
    assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC)


@pytest.mark.parametrize(
    "value", ["abc", "1.5", "-1", " 12", "1e9", "12 ", "99999999999999999999", "١٢٣"]
)
def test_malformed_source_date_epoch(value):
    with pytest.raises(InputError) as caught:
        timestamps.source_date_epoch({"SOURCE_DATE_EPOCH": value})
    assert caught.value.details["variable"] == "SOURCE_DATE_EPOCH"


def test_stopwatch_is_monotonic():
    watch = timestamps.Stopwatch()
    first = watch.elapsed()
    assert 0 <= first <= watch.elapsed()


def test_cli_now_uses_source_date_epoch():
    result = run_script("utils", "time_utils", "now", env={"SOURCE_DATE_EPOCH": "1761912000"})
    assert result.returncode == 0, result.stderr
    printed = json_lines(result.stdout)[0]
    assert printed["compact"] == "20251031T120000Z"
    assert printed["iso"] == "2025-10-31T12:00:00Z"
    assert printed["source"] == "SOURCE_DATE_EPOCH"


def test_cli_malformed_source_date_epoch_exits_2():
    result = run_script("utils", "time_utils", "now", env={"SOURCE_DATE_EPOCH": "soon"})
    assert result.returncode == 2
    error = single_error(result.stderr)
    assert error["variable"] == "SOURCE_DATE_EPOCH" and error["value"] == "soon"
    assert result.stdout == b""


def test_cli_parse():
    result = run_script("utils", "time_utils", "parse", "2025-10-31T13:00:00+01:00")
    assert json_lines(result.stdout)[0]["iso"] == "2025-10-31T12:00:00Z"
    bad = run_script("utils", "time_utils", "parse", "not-a-time")
    assert bad.returncode == 2 and single_error(bad.stderr)["value"] == "not-a-time"
