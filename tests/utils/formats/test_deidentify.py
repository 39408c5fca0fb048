"""The Annex E action table as data, and how its options combine."""

import pytest

from scripts.utils.formats import deidentify as de


def test_the_table_is_the_standards_whole_table():
    exact, masked, options = de.action_table()
    assert len(exact) + len(masked) > 600  # Table E.1-1 (2024b) lists about 620 attributes
    assert exact[0x00100010]["basic"] == "Z" and exact[0x00100010]["name"] == "Patient's Name"
    assert exact[0x0020000D]["basic"] == "U" and exact[0x00080020]["retain_modified_dates"] == "C"
    assert set(options) == set(de.OPTIONS) | {"retain_safe_private"}
    assert (
        de.table_row(0x50001234)["name"] == "Curve Data"
        and de.table_row(0x60223000)["name"] == "Overlay Data"
    )
    assert de.table_row(0x00280010) is None  # Rows: not identifying, not listed


@pytest.mark.parametrize(
    "tag, options, action",
    [
        (0x00100010, (), "Z"),  # Patient's Name
        (0x00100020, (), "D"),  # Patient ID: keyed pseudonym
        (0x00080080, (), "X"),  # Institution Name X/Z/D -> strongest
        (0x00080080, ("retain_institution_identity",), "K"),
        (0x00100040, ("retain_patient_characteristics",), "K"),  # Patient's Sex
        (0x00080020, ("retain_modified_dates",), "C"),
        (0x00080020, ("retain_full_dates",), "K"),
        (0x00181000, ("retain_device_identity",), "K"),  # Device Serial Number
        (0x00181002, ("retain_uids", "retain_device_identity"), "K"),
        (
            0x00102110,
            ("retain_patient_characteristics", "clean_descriptors"),
            "C",
        ),  # Allergies: both C
        (0x00091010, ("retain_uids",), "X"),  # private
        (0x00280010, (), "K"),
    ],
)
def test_actions_follow_the_table_and_its_options(tag, options, action):
    assert de.Deidentifier(b"k" * 32, options).action(tag) == action


def test_values_by_action():
    deid = de.Deidentifier(b"k" * 32, ("retain_modified_dates",))
    context = de.FileContext(None, deid)
    context.patient_id = "P1"
    assert deid.value(0x00100010, "PN", "Doe^Jane", context) == (True, None)
    assert deid.value(0x00080081, "ST", "1 Main St", context) == (
        False,
        None,
    )  # Institution Address: X
    keep, uid = deid.value(0x0020000D, "UI", "1.2.3.4", context)
    assert keep and uid.startswith("2.25.") and uid == deid.uid("1.2.3.4") and len(uid) <= 64
    shifted = deid.value(0x00080020, "DA", "20240229", context)[1]
    assert shifted != "20240229" and len(shifted) == 8
    assert deid.value(0x00080021, "DA", "20240301", context)[1] == de.shift_date(
        "20240301", deid.date_shift_days("P1")
    )
    assert deid.value(0x00080030, "TM", "101500", context)[1] == "101500"
    assert (
        deid.value(0x00080016, "UI", "1.2.840.10008.5.1.4.1.1.2", context)[1]
        == "1.2.840.10008.5.1.4.1.1.2"
    )
    assert deid.value(0x00080016, "UI", "1.2.999.1", context)[1].startswith(
        "2.25."
    )  # unregistered UID


def test_date_shift_is_per_patient_and_keyed():
    one, other = de.Deidentifier(b"a" * 32), de.Deidentifier(b"b" * 32)
    days = {one.date_shift_days(f"P{i}") for i in range(50)}
    assert len(days) > 40 and all(1 <= d <= de.MAX_DATE_SHIFT_DAYS for d in days)
    assert one.date_shift_days("P1") != other.date_shift_days("P1") or one.date_shift_days(
        "P2"
    ) != other.date_shift_days("P2")
    assert (
        de.shift_date("20240301", 1) == "20240229"
        and de.shift_date("2024030112", 1) == "2024022912"
    )
    assert de.shift_date("garbage", 3) is None


def test_conflicting_or_unknown_options_are_refused():
    with pytest.raises(ValueError, match="exclude"):
        de.Deidentifier(b"k" * 32, ("retain_full_dates", "retain_modified_dates"))
    with pytest.raises(ValueError, match="unknown"):
        de.Deidentifier(b"k" * 32, ("retain_everything",))


def test_quoted_values_in_library_messages_are_dropped():
    assert (
        de.scrub_quoted("Invalid value for VR PN: 'Doe^Jane'")
        == "Invalid value for VR PN: '<value removed>'"
    )
