"""De-identification of DICOM attributes by the standard's own table.

The actions come from DICOM PS3.15 Annex E, Table E.1-1 (edition 2024b),
shipped as data in ``scripts/utils/formats/data/ps3.15_table_e1-1.tsv``: one row per
attribute with its Basic Profile action and its action under each option.
Nothing here lists attributes by hand.

How an action becomes a value (``Deidentifier.value``):

* ``X`` remove, ``Z`` empty: the value is gone (``None``); compound actions
  of the Basic Profile (X/Z, X/D, X/Z/D, X/Z/U*) take their strongest
  choice, removal, since an exported table has no IOD type to satisfy.
* ``D`` dummy: a keyed pseudonym ``anon-<16 hex>`` for text (stable, so the
  same Patient ID or Accession Number maps to the same dummy), a fixed
  dummy for dates (19000101) and times (000000), 0 for numbers.
  Patient ID (Z/D) always gets its pseudonym: patient-level splits need it.
* ``U``: a consistent ``2.25.<integer>`` UID, keyed like the pseudonyms.
* ``C`` clean: dates and date-times move back by a keyed per-patient number
  of days (1..3650; times of day stay), so intervals within a patient
  survive (Retain Longitudinal Temporal Information with Modified Dates);
  text is kept with every identifying value of the same file (names, IDs,
  dates, institutions, ... any value that the profile changes) replaced
  by ``[REDACTED]``.
* ``K`` keep. Attributes the table does not list are kept; private
  attributes (odd groups) are removed.

Options (Table E.1-1 columns, codes from CID 7050) loosen single
attributes: when an option is on and names an action for an attribute, that
action replaces the Basic Profile's; when several options are on, the
strictest of their actions wins.

Usage (from a script; metadata_extractor.py is the real one):
    deid = Deidentifier(key, options=("retain_modified_dates",))
    context = FileContext(ds, deid)                  # one per file
    keep, value = deid.value(0x00080020, "DA", "20240102", context)
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import re
from pathlib import Path

TABLE_FILE = Path(__file__).resolve().parent / "data" / "ps3.15_table_e1-1.tsv"
EDITION = "DICOM PS3.15 2024b, Annex E, Table E.1-1"
PROFILE = ("113100", "Basic Application Confidentiality Profile")
OPTIONS = {  # flag name -> (code in CID 7050, meaning)
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
}
STRICTNESS = "XZDUCK"  # strongest first
REDACTED = "[REDACTED]"
MAX_DATE_SHIFT_DAYS = 3650
PATIENT_ID_TAG = 0x00100020
TEXT_VRS = {
    "AE",
    "AS",
    "CS",
    "DA",
    "DS",
    "DT",
    "IS",
    "LO",
    "LT",
    "PN",
    "SH",
    "ST",
    "TM",
    "UC",
    "UR",
    "UT",
}
FREE_TEXT_VRS = {"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
DUMMY_BY_VR = {"DA": "19000101", "TM": "000000", "DT": "19000101000000"}
_QUOTED = re.compile(r"(['\"])(?:(?!\1).){3,}\1")


@functools.lru_cache(maxsize=1)
def action_table() -> tuple[dict, dict, tuple]:
    """``(exact, masked, option names)``: tag -> {"basic": code, option: code}.

    ``masked`` holds the rows with ``x`` digits (curves, overlays) as
    ``(mask, value) -> row``.
    """
    exact, masked, header = {}, {}, None
    for line in TABLE_FILE.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        cells = line.split("\t")
        if header is None:
            header = cells
            continue
        row = {"name": cells[1], "basic": cells[2]}
        row.update({name: code for name, code in zip(header[3:], cells[3:]) if code})
        if "x" in cells[0]:
            mask = int("".join("0" if c == "x" else "f" for c in cells[0]), 16)
            masked[(mask, int(cells[0].replace("x", "0"), 16))] = row
        else:
            exact[int(cells[0], 16)] = row
    return exact, masked, tuple(header[3:])


def table_row(tag: int):
    """The Table E.1-1 row of an attribute, or None when it is not listed."""
    exact, masked, _ = action_table()
    row = exact.get(tag)
    if row is None:
        for (mask, value), candidate in masked.items():
            if tag & mask == value:
                return candidate
    return row


def strongest(codes) -> str:
    return min(codes, key=STRICTNESS.index)


class Deidentifier:
    """Applies Table E.1-1, with the chosen options, under a secret key."""

    def __init__(self, key: bytes, options=()):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown de-identification options: {unknown}")
        if "retain_full_dates" in options and "retain_modified_dates" in options:
            raise ValueError("retain_full_dates and retain_modified_dates exclude each other")
        self.key = key
        self.options = tuple(sorted(options))
        self._actions = {}

    # -- keyed replacements -------------------------------------------------
    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, value, kind: str = "patient"):
        return None if value in (None, "") else "anon-" + self._digest(kind, str(value)).hex()[:16]

    def uid(self, value):
        # 2.25.<integer> (PS3.5 B.2): 120 bits keep the UID within 64 characters.
        return (
            None
            if value in (None, "")
            else "2.25." + str(int.from_bytes(self._digest("uid", str(value))[:15], "big"))
        )

    def date_shift_days(self, patient_id) -> int:
        """Days every date of this patient moves back (1..3650), keyed: intervals survive."""
        return (
            1
            + int.from_bytes(self._digest("date-shift", str(patient_id or ""))[:8], "big")
            % MAX_DATE_SHIFT_DAYS
        )

    def fingerprint(self) -> str:
        """Identifies the key in reports without revealing it."""
        return hashlib.sha256(b"crh-deid-key\x00" + self.key).hexdigest()[:16]

    # -- actions -------------------------------------------------------------
    def action(self, tag: int) -> str:
        """The one-letter action for an attribute under the chosen options."""
        cached = self._actions.get(tag)
        if cached is not None:
            return cached
        if (tag >> 16) & 1:
            action = "X"  # private attributes (Retain Safe Private is not offered)
        else:
            row = table_row(tag)
            if row is None:
                action = "K"
            else:
                chosen = [row[name] for name in self.options if name in row]
                action = (
                    strongest(chosen)
                    if chosen
                    else strongest(row["basic"].replace("*", "").split("/"))
                )
                if tag == PATIENT_ID_TAG and action in "ZX":
                    action = "D"  # a keyed pseudonym: splits by patient must still work
        self._actions[tag] = action
        return action

    def report(self) -> dict:
        return {
            "profile": {"code": PROFILE[0], "meaning": PROFILE[1], "table": EDITION},
            "options": [
                {"name": name, "code": OPTIONS[name][0], "meaning": OPTIONS[name][1]}
                for name in self.options
            ],
            "pseudonyms": "HMAC-SHA256",
            "key_fingerprint": self.fingerprint(),
            "date_shift": (
                "keyed per patient, 1..3650 days earlier; times of day kept"
                if "retain_modified_dates" in self.options
                else None
            ),
            "private_attributes": "removed",
        }

    def value(self, tag: int, vr: str, value, context: FileContext):
        """``(keep, new value)`` for one attribute's plain value (None, str, number or list)."""
        action = self.action(tag)
        if (
            action == "K"
            and vr == "UI"
            and "retain_uids" not in self.options
            and not _registered_uids(value)
        ):
            action = "U"  # a UID the standard does not define: it may carry an organisation's root
        if value is None:
            return action != "X", value
        if action == "K":
            if (
                vr in FREE_TEXT_VRS
            ):  # a kept text may still hold a value the profile removes elsewhere
                return True, _each(value, context.scrub)
            return True, value
        if action in "XZ":
            return action == "Z", None
        if action == "U":
            return True, _each(value, self.uid)
        if action == "D":
            if tag == PATIENT_ID_TAG:
                return True, _each(value, self.pseudonym)
            if vr in DUMMY_BY_VR:
                return True, _each(value, lambda _: DUMMY_BY_VR[vr])
            if vr == "UI":
                return True, _each(value, self.uid)
            if vr in TEXT_VRS and vr not in ("DS", "IS"):
                return True, _each(value, lambda v: self.pseudonym(v, f"dummy-{tag:08x}"))
            return True, _each(value, lambda _: 0)
        # C: clean
        if vr in ("DA", "DT") and "retain_modified_dates" in self.options:
            days = self.date_shift_days(context.patient_id)
            return True, _each(value, lambda v: shift_date(v, days))
        if vr == "TM" and "retain_modified_dates" in self.options:
            return True, value
        if vr in ("DA", "DT", "TM"):
            return False, None
        return True, _each(value, context.scrub) if isinstance(value, (str, list)) else value


def _each(value, function):
    if isinstance(value, list):
        return [None if v is None else function(v) for v in value]
    return function(value)


def shift_date(value, days: int):
    """A DA (YYYYMMDD) or the date part of a DT moved back ``days`` days; unparsable: removed."""
    text = str(value).strip()
    try:
        moved = datetime.date(int(text[0:4]), int(text[4:6]), int(text[6:8])) - datetime.timedelta(
            days=days
        )
    except (ValueError, IndexError):
        return None
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}" + text[8:]


class FileContext:
    """What de-identifying one file needs: its Patient ID and its identifying values.

    ``scrub(text)`` replaces every identifying value of the file inside
    ``text``: the values of attributes that the profile removes or replaces
    (and each part of a person's name), and the original dates.
    """

    def __init__(self, ds, deid: Deidentifier):
        self.ds = ds
        self.deid = deid
        self.patient_id = str(ds.get("PatientID", "") or "") if ds is not None else ""
        self._values = None

    def identifying_values(self) -> set:
        from scripts.utils.formats.dicom_header import dictionary_vr, raw_plain, text_decoder

        values = set()
        if self.ds is None:
            return values
        decode = text_decoder(self.ds)  # nested items use the file's character set
        stack = [self.ds]
        while stack:
            dataset = stack.pop()
            for (
                tag
            ) in dataset.keys():  # pydicom's tag objects: get_item takes them without converting
                action = self.deid.action(tag)
                private = (tag >> 16) & 1
                if action == "K" and not private and dictionary_vr(tag) not in ("SQ", "UN"):
                    # kept, and not a sequence: nothing identifying inside (the common case, so
                    # first)
                    continue
                try:
                    raw = dataset.get_item(tag, keep_deferred=True)
                    vr = raw.VR or dictionary_vr(tag)
                except Exception:
                    continue
                if vr == "SQ":
                    try:
                        stack.extend(dataset[tag].value or [])
                    except Exception:
                        pass
                    continue
                # What the profile takes out is identifying; text it only cleans is not (dates are).
                if (
                    vr not in TEXT_VRS | {"UI"}
                    or action == "K"
                    or (action == "C" and vr not in ("DA", "DT"))
                ):
                    continue
                if (
                    getattr(raw, "value", True) is None
                ):  # a deferred (over 1 MB) value: never exported, never read
                    continue
                try:
                    value = raw_plain(dataset, tag, decode, present=True)
                except Exception:
                    continue
                for item in value if isinstance(value, list) else [value]:
                    text = str(item if item is not None else "").strip()
                    if len(text) >= 3:
                        values.add(text)
                    if vr == "PN":
                        values.update(
                            part for part in re.split(r"[\^= ,]+", text) if len(part) >= 3
                        )
        return values

    def scrub(self, text):
        if not isinstance(text, str) or not text:
            return text
        if (
            self._values is None
        ):  # the file's identifying values, longest first, lower-cased for the search
            self._values = sorted(
                ((v.lower(), v) for v in self.identifying_values()), key=lambda p: -len(p[0])
            )
        lowered = text.lower()
        hits = [value for folded, value in self._values if folded in lowered]
        if not hits:  # the common case: a substring search, no regular expression to build
            return text
        return re.compile("|".join(map(re.escape, hits)), re.IGNORECASE).sub(REDACTED, text)


@functools.lru_cache(maxsize=65536)
def _registered_uid(value: str) -> bool:
    from pydicom.uid import UID_dictionary

    return value in UID_dictionary


def _registered_uids(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(v is None or _registered_uid(str(v)) for v in values)


def scrub_quoted(text: str) -> str:
    """Library messages quote the values they complain about: drop the quoted values."""
    return _QUOTED.sub(lambda m: m.group(1) + "<value removed>" + m.group(1), text)
