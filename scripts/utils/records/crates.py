"""Proof crates on disk: writing their RO-Crate metadata, and checking a crate offline.

    from scripts.utils.records import crates
    crates.write_metadata(folder, {"root": {...}, "entities": {"#id": {...}}})
    verdict = crates.check_crate(folder)              # {"ok": bool, "failures": [...], ...}

A crate's layout and its claim are described in orchestration/proofs.py and
docs/proofs.md. The metadata is written by ro-crate-py; the check is the
reviewer's side, and needs nothing but the crate (and, to pin the signer, a
public key given by path):

1. the DSSE envelope's signature verifies against the key (signing.py);
2. the statement's subjects are exactly the crate's files (none missing,
   none added) and each file has the SHA-256 signed for it;
3. every file the metadata lists with a SHA-256 has it;
4. the metadata conforms to the Provenance Run Crate profile 0.5
   (roc-validator, requirement level REQUIRED).

The profile is written for RO-Crate 1.1, so the crates are RO-Crate 1.1
(``sha256`` is defined inline, as schema.org's). The validator resolves the
1.1 JSON-LD context over HTTP; offline, it is served through the
validator's own HTTP cache (a temporary folder) from the 1.3 context that
ro-crate-py ships, with 1.1's IRIs for the four Bioschemas terms that
changed (``CONTEXT_1_1_IRIS``). That context holds every 1.1 term the crates
use (and more: a term 1.3 added would pass here and not online).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import textwrap
import warnings
from pathlib import Path, PurePosixPath

import orjson

from scripts.utils.errors import InputError
from scripts.utils.jsonio import canonical_json
from scripts.utils.records import signing

METADATA = "ro-crate-metadata.json"
PREVIEW = "ro-crate-preview.html"
WORKFLOW = "workflow.json"
ENVELOPE = "proof.dsse.json"
PUBLIC_KEY = "proof-key.pub.pem"
UNSIGNED = (ENVELOPE, PUBLIC_KEY)  # the signature and its key cannot be among the signed files
PROFILE_VERSION = "0.5"
PROFILES = [
    f"https://w3id.org/ro/wfrun/process/{PROFILE_VERSION}",
    f"https://w3id.org/ro/wfrun/workflow/{PROFILE_VERSION}",
    f"https://w3id.org/ro/wfrun/provenance/{PROFILE_VERSION}",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
]
VALIDATION_PROFILE = "provenance-run-crate"
RO_CRATE_VERSION = "1.1"
EXTRA_TERMS = {"sha256": "http://schema.org/sha256"}  # in RO-Crate 1.2's context, not in 1.1's
CONTEXT_1_1 = "https://w3id.org/ro/crate/1.1/context"
CONTEXT_1_1_IRIS = {  # the terms whose IRI RO-Crate 1.1's context gives otherwise than 1.3's
    "ComputationalWorkflow": "https://bioschemas.org/ComputationalWorkflow",
    "FormalParameter": "https://bioschemas.org/FormalParameter",
    "input": "https://bioschemas.org/ComputationalWorkflow#input",
    "output": "https://bioschemas.org/ComputationalWorkflow#output",
}


def listing_digest(entries: dict) -> str:
    """The SHA-256 of a data root's listing: canonical JSON of {name: sha256}."""
    return hashlib.sha256(canonical_json(dict(sorted(entries.items())))).hexdigest()


def stamp_date(run_id: str) -> str:
    """A run id's stamp (``..._20251031T120000Z``) as an ISO 8601 date-time."""
    stamp = run_id.rpartition("_")[2].partition("-")[0]
    return (
        f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}+00:00"
    )


def write_metadata(folder: Path, graph: dict) -> None:
    """``ro-crate-metadata.json`` in ``folder`` from ``graph`` ({"root": properties of ./,
    "entities": {@id: properties}}), written by ro-crate-py. Entities whose @id is a file
    already in the folder are data entities (``hasPart`` of the root)."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version=RO_CRATE_VERSION)
    crate.metadata.extra_terms = dict(EXTRA_TERMS)
    for key, value in graph["root"].items():
        crate.root_dataset[key] = value
    crate.root_dataset["conformsTo"] = [{"@id": profile} for profile in PROFILES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No source": the files are in the folder already
        for entity_id, properties in graph["entities"].items():
            if entity_id.startswith("#"):
                crate.add(ContextEntity(crate, entity_id, properties=properties))
            else:
                crate.add_file(None, dest_path=entity_id, properties=properties)
        for profile in PROFILES:
            crate.add(
                ContextEntity(crate, profile, properties={"@type": "CreativeWork", "name": profile})
            )
        crate.metadata.write(folder)


def unpack_crate(archive: Path, into: Path) -> Path:
    """A crate sent as a ZIP file, unpacked into ``into``; returns its folder (the archive's
    root, or its one top folder). Exit 2 (InputError) for what is not a ZIP file, a member that
    would land outside ``into``, a link, or a member longer than the archive says."""
    import shutil
    import stat
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                name = info.filename
                parts = PurePosixPath(name.replace("\\", "/")).parts
                drive = bool(parts) and parts[0].endswith(":")  # C:/... from Windows
                if name.startswith(("/", "\\")) or ".." in parts or drive:
                    raise InputError("a member would land outside the crate", file=str(archive),
                                     member=name)  # fmt: skip
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise InputError("a member is a link", file=str(archive), member=name)
                target = into.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                if target.stat().st_size != info.file_size:
                    raise InputError("a member is not the size the archive gives",
                                     file=str(archive), member=name)  # fmt: skip
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise InputError(f"not a readable ZIP file: {exc}", file=str(archive))
    if (into / METADATA).is_file():
        return into
    folders = [path for path in into.iterdir() if path.is_dir()]
    if len(folders) == 1 and (folders[0] / METADATA).is_file():
        return folders[0]
    return into  # the check names the missing metadata file


def enclosed_digests(folder: Path) -> dict:
    """{crate path: SHA-256} of every file in the crate but the envelope and its key."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not path.is_symlink():
            name = path.relative_to(folder).as_posix()
            if name not in UNSIGNED:
                found[name] = _sha256(path)
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------


def check_crate(
    folder: Path, key_pem: bytes | None = None, profile: bool = True, key_id: str | None = None
) -> dict:
    """Everything a reviewer checks, offline. Returns {"ok", "failures": [text], "statement",
    "key", "files", "profile"}; a failure names the file or the rule. The signer is pinned by
    ``key_pem`` (their public key) or ``key_id`` (its fingerprint, as certify prints it)."""
    folder = Path(folder)
    failures = []
    result = {"crate": str(folder), "failures": failures, "statement": None, "key": None}
    envelope_path, key_path = folder / ENVELOPE, folder / PUBLIC_KEY
    if not (folder / METADATA).is_file():
        failures.append(f"{METADATA}: missing (not an RO-Crate)")
    statement = None
    if not envelope_path.is_file():
        failures.append(f"{ENVELOPE}: missing (nothing is signed)")
    else:
        key = None
        enclosed_pem = key_path.read_bytes() if key_path.is_file() else None
        try:
            if key_pem is not None:
                key = signing.public_key(key_pem, "the given key")
                if enclosed_pem is not None:
                    enclosed = signing.public_key(enclosed_pem, PUBLIC_KEY)
                    if enclosed.keyid != key.keyid:
                        failures.append(
                            f"{PUBLIC_KEY}: the enclosed public key ({enclosed.keyid}) is not the "
                            f"given key ({key.keyid})"
                        )
            elif enclosed_pem is None:
                failures.append(
                    f"{PUBLIC_KEY}: missing, and no key given (--key)"
                    if key_id is None
                    else f"{PUBLIC_KEY}: missing (a key id alone cannot check a signature)"
                )
            else:
                key = signing.public_key(enclosed_pem, PUBLIC_KEY)
                if key_id is not None and key.keyid != key_id:
                    failures.append(
                        f"{PUBLIC_KEY}: the enclosed public key ({key.keyid}) is not the given "
                        f"key {key_id}"
                    )
                    key = None
            if key is not None:
                result["key"] = key.keyid
                statement = signing.verified_statement(envelope_path.read_bytes(), key)
        except signing.ProofError as exc:
            failures.append(f"{ENVELOPE}: {exc}")
    if statement is None and envelope_path.is_file():
        statement = signing.payload_of(envelope_path.read_bytes())  # to name files; not trusted
    result["statement"] = statement
    present = enclosed_digests(folder)
    result["files"] = len(present)
    failures.extend(
        f"{path.relative_to(folder).as_posix()}: a symbolic link (a crate holds files only)"
        for path in sorted(folder.rglob("*"))
        if path.is_symlink()
    )
    if isinstance(statement, dict):
        signed = {}
        for subject in statement.get("subject") or []:
            try:
                signed[subject["name"]] = subject["digest"]["sha256"]
            except (KeyError, TypeError):
                failures.append(f"{ENVELOPE}: a subject without a name and a sha256 digest")
        for name in sorted(set(signed) - set(present)):
            failures.append(f"{name}: signed but missing from the crate (removed)")
        for name in sorted(set(present) - set(signed)):
            failures.append(f"{name}: in the crate but not signed (added)")
        for name in sorted(set(signed) & set(present)):
            if signed[name] != present[name]:
                failures.append(
                    f"{name}: SHA-256 {present[name]} is not the signed {signed[name]} (changed)"
                )
    failures.extend(metadata_failures(folder, present))
    result["profile"] = None
    if profile and (folder / METADATA).is_file():
        issues = profile_issues(folder)
        result["profile"] = {"profile": VALIDATION_PROFILE, "issues": issues}
        failures.extend(f"{METADATA}: profile {VALIDATION_PROFILE}: {text}" for text in issues)
    result["ok"] = not failures
    return result


def metadata_failures(folder: Path, present: dict) -> list:
    """Files whose SHA-256 in the metadata is not theirs, and listed files that are missing."""
    try:
        graph = orjson.loads((folder / METADATA).read_bytes())["@graph"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return (
            [f"{METADATA}: not a JSON-LD document with an @graph"]
            if (folder / METADATA).is_file()
            else []
        )
    failures = []
    for entity in graph:
        if not isinstance(entity, dict):
            failures.append(f"{METADATA}: an entity that is not an object")
            continue
        entity_id, digest = entity.get("@id"), entity.get("sha256")
        if not isinstance(entity_id, str) or digest is None or entity_id.startswith("#"):
            continue
        if entity_id not in present:
            failures.append(f"{entity_id}: listed in {METADATA} but missing from the crate")
        elif present[entity_id] != digest:
            failures.append(
                f"{entity_id}: SHA-256 {present[entity_id]} is not the {digest} {METADATA} lists"
            )
    return failures


def profile_issues(folder: Path) -> list:
    """The Provenance Run Crate rules (REQUIRED) the crate breaks: roc-validator, offline.

    The validator misreads a crate whose path holds a space (every rule about the root entity
    fails): such a crate is checked through a link to it from a temporary folder."""
    folder = Path(folder).resolve()
    if not any(character.isspace() for character in str(folder)):
        return validator_issues(folder)
    with tempfile.TemporaryDirectory(prefix="crh-crate-") as scratch:
        link = Path(scratch) / "crate"
        try:
            link.symlink_to(folder, target_is_directory=True)
        except OSError:  # no symbolic links here (Windows without the privilege)
            link = None
        if link is None or any(character.isspace() for character in str(link)):
            return [
                "not checked: the validator cannot read a crate at a path with spaces; "
                "check it from a folder without spaces"
            ]
        return validator_issues(link)


def validator_issues(folder: Path) -> list:
    from rocrate_validator import models, services

    settings = services.ValidationSettings(
        rocrate_uri=str(folder),
        profile_identifier=VALIDATION_PROFILE,
        requirement_severity=models.Severity.REQUIRED,
        offline=True,
        cache_path=_context_cache(),
    )
    try:
        result = services.validate(settings)
    except Exception as exc:  # noqa: BLE001 - the validator's own failure on a malformed crate
        return [f"the validator could not check it: {type(exc).__name__}: {str(exc)[:300]}"]
    return sorted({f"{issue.message} ({issue.check.identifier})" for issue in result.get_issues()})


_cache_folder = None


def _context_cache() -> str:
    """The validator's HTTP cache, holding the context: one per process (the validator keeps its
    HTTP session for the process), deleted at exit."""
    global _cache_folder
    if _cache_folder is None:
        folder = tempfile.TemporaryDirectory(prefix="crh-roc-")
        _serve_context_offline(str(Path(folder.name) / "http"))
        _cache_folder = folder  # removed with the object, at exit at the latest
    return str(Path(_cache_folder.name) / "http")


def _serve_context_offline(cache_name: str) -> None:
    """Put the RO-Crate JSON-LD context (ro-crate-py's copy) in a requests-cache store, as the
    validator's HTTP cache would hold it after fetching it online."""
    import requests
    import rocrate
    from requests.adapters import HTTPAdapter
    from requests_cache import CachedSession
    from urllib3 import HTTPResponse

    context_file = Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld"
    bundled = orjson.loads(context_file.read_bytes())
    body = orjson.dumps({"@context": {**bundled["@context"], **CONTEXT_1_1_IRIS}})
    url = CONTEXT_1_1

    class Bundled(HTTPAdapter):
        def send(self, request, **kwargs):
            raw = HTTPResponse(
                body=io.BytesIO(body),
                headers={"Content-Type": "application/ld+json"},
                status=200,
                preload_content=False,
                request_url=request.url,
            )
            return self.build_response(request, raw)

    session = CachedSession(
        cache_name=cache_name, backend="sqlite", allowable_methods=("GET",), expire_after=-1
    )
    session.mount(url, Bundled())
    for accept in (
        "application/ld+json, application/json, */*;q=0.1",
        "application/ld+json, application/json",
    ):
        response = session.get(url, headers={"Accept": accept})
        if response.status_code != requests.codes.ok:
            raise OSError(f"could not cache the RO-Crate context: {response.status_code}")
    session.close()


def verdict_text(verdict: dict) -> str:
    """The verdict on one screen: what was checked, the claim, and each failure."""
    statement = verdict.get("statement") or {}
    predicate = statement.get("predicate") if isinstance(statement, dict) else None
    predicate = predicate if isinstance(predicate, dict) else {}
    claim = predicate.get("claim")
    lines = [
        f"crate      {verdict['crate']}",
        f"signed by  {verdict.get('key') or '(no key)'}",
        f"files      {verdict.get('files', 0)} enclosed, "
        f"{len(predicate.get('not_enclosed') or {})} listed by digest only, "
        f"{len(predicate.get('data_roots') or {})} data roots by listing hash",
        f"kind       {predicate.get('kind', '?')}, {len(predicate.get('runs') or {})} runs",
        *(wrapped for line in claim_lines(claim) for wrapped in at_80_columns(line)),
        "reads      " + reads_text(predicate),
        f"profile    {VALIDATION_PROFILE} {PROFILE_VERSION}: "
        + (
            "not checked"
            if verdict.get("profile") is None
            else "conforms"
            if not verdict["profile"]["issues"]
            else "does not conform"
        ),
    ]
    for step in verdict.get("rerun") or []:
        state = step.get("rerun") or (
            "identical" if step.get("identical") else f"DIFFERENT ({step.get('differing', '?')})"
        )
        forced = f"; forced: {', '.join(step['forced'])}" if step.get("forced") else ""
        lines.append(f"re-run     {step['step']}: {state}{forced}"[:200])
    if verdict["ok"]:
        lines.append(
            "VERIFIED   the signature, every file and the profile check out"
            + ("; every re-run step gave the signed outputs" if verdict.get("rerun") else "")
        )
        if isinstance(claim, dict) and claim.get("identical") is False:
            lines.append("           (what is signed is a claim that the runs differ: see above)")
    else:
        lines.append(f"FAILED     {len(verdict['failures'])} checks:")
        shown = verdict["failures"][:15]
        lines += [f"  - {failure}" for failure in shown]
        if len(verdict["failures"]) > len(shown):
            lines.append(f"  ... and {len(verdict['failures']) - len(shown)} more (--json)")
    return "\n".join(lines) + "\n"


def at_80_columns(line: str) -> list:
    """A verdict line broken between words to fit 80 columns, its continuation under the text."""
    return textwrap.wrap(
        line, 80, subsequent_indent=" " * 11, break_long_words=False, break_on_hyphens=False
    ) or [line]


def reads_text(predicate: dict) -> str:
    """What the crate says of the files its runs read: those not declared, and the runs whose
    reads could not be traced (an external command that runs no Python)."""
    undeclared = predicate.get("read_but_not_declared") or {}
    untraced = [str(run) for run in predicate.get("reads_not_traced") or []]
    parts = [
        f"{run}: {len(names)} read but not declared" for run, names in sorted(undeclared.items())
    ]
    if untraced:
        parts.append(f"not traced for {', '.join(untraced)} (its command runs no Python)")
    if parts:
        return "; ".join(parts)[:300]
    if not predicate.get("runs"):
        return "not traced (the crate holds no run's record)"
    return "every file read was declared"


def claim_lines(claim) -> list:
    """The signed claim in words: what was recorded, or what a verify or a rerun found (each
    cause of a difference on a line of its own, the first five)."""
    if not isinstance(claim, dict):
        return [f"claim      {orjson.dumps(claim).decode()[:200]}"]
    if claim.get("recorded"):
        return ["claim      recorded: these files came from these runs"]
    if "varied" in claim:  # a verify
        varied = ", ".join(map(str, claim.get("varied") or []))
        if claim.get("identical"):
            return [
                f"claim      identical: {claim.get('artifacts')} artifacts, the same bytes "
                f"when run again varied ({varied})"
            ]
        causes = claim.get("causes") or []
        lines = [
            f"claim      NOT identical: {claim.get('differing')} of {claim.get('artifacts')} "
            f"artifacts differ when run again varied ({varied})"
        ]
        for cause in causes[:5]:
            lines.append(f"cause      {cause_text(cause)}"[:200])
        if len(causes) > 5:
            lines.append(f"cause      ... and {len(causes) - 5} more (--json)")
        if claim.get("unexplained"):
            lines.append(f"cause      {len(claim['unexplained'])} artifacts differ unexplained")
        return lines
    if "outputs" in claim:  # a rerun
        state = (
            f"identical: {claim.get('outputs')} outputs, the same bytes"
            if claim.get("identical")
            else f"NOT identical: {claim.get('differing')} of {claim.get('outputs')} outputs differ"
        )
        forced = claim.get("forced") or []
        return [
            f"claim      re-run of {claim.get('run')} {state}"
            + (f"; forced: {', '.join(map(str, forced))}" if forced else "")
        ]
    return [f"claim      {orjson.dumps(claim, option=orjson.OPT_SORT_KEYS).decode()[:200]}"]


def cause_text(cause: dict) -> str:
    """One cause of a difference, as verify reported it: the variations, the artifacts they
    changed, and the fix it suggests."""
    if not isinstance(cause, dict):
        return str(cause)
    names = [
        item.get("artifact", "?") if isinstance(item, dict) else str(item)
        for item in cause.get("artifacts") or []
    ]
    text = " + ".join(map(str, cause.get("variations") or [])) or "?"
    text += ": " + ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return text + (f" (fix: {cause['fix']})" if cause.get("fix") else "")
