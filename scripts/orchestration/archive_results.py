"""Move a run's outputs into an archive folder losslessly; pack and verify archives.

    python scripts/orchestration/archive_results.py runs/scratch_42                    # -> experiments/results/archive/scratch_42/
    python scripts/orchestration/archive_results.py runs/scratch_42 --archive tar.gz  # and a deterministic tarball
    python scripts/orchestration/archive_results.py --verify experiments/results/archive/scratch_42.tar.gz

Moving is copy, verify, then remove, so it works across filesystems and an
interruption at any point loses nothing: every file is copied to a temporary
name in the destination, flushed, renamed into place and read back against
the SHA-256 of the source; only when all files are verified is
``MANIFEST.json`` written (atomically) in the destination, and only then are
source files that still match it removed. Running the same command again
after an interruption finishes the job without copying twice: files already
in place with the right hash are kept, and a source already gone is fine
once the manifest lists it. Registry entries move with their files (in the
run's commit) and keep the run that produced them. The report holds what
was archived, not how the move went (resumed or not), which is logged.

``--archive tar.gz|zip`` also packs the destination into
``<destination>.tar.gz`` or ``.zip`` whose bytes depend only on the files:
entries sorted, times from SOURCE_DATE_EPOCH (0 when unset), owner 0/0 with
no names, modes 0644/0755, and no name or time in the gzip header. ``--verify
ARCHIVE`` re-hashes every member against the manifest packed inside it and
exits 1 on any difference.

Paths must stay inside the workspace: a source or destination outside it, a
member name with ``..`` or an absolute path, or a symbolic link pointing out
of the workspace is refused with exit 2.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import sys
import tarfile
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import orjson

from scripts.utils import cli, time_utils
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import atomic_output, canonical_json, read_json
from scripts.utils.run_records import RunRecorder, relative_to_workspace, resolve_workspace

MANIFEST_NAME = "MANIFEST.json"
DEFAULT_ARCHIVE_DIR = "experiments/results/archive"
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safe_member(name: str) -> str:
    """A relative POSIX member name; ``..``, absolute and drive paths are refused."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]) or not posix.parts:
        raise InputError("path escapes its folder (absolute, drive or '..')", file=name)
    return posix.as_posix()


def source_files(workspace: Path, source: Path) -> dict:
    """``{relative name: absolute path}`` of the source's files; links out of the workspace refused."""
    files = {}
    for path in sorted(source.rglob("*")):
        if path.is_symlink():
            target = path.resolve()
            relative_to_workspace(workspace, target)  # raises when the link points out
            if not target.is_file():
                continue
        elif not path.is_file():
            continue
        if path.name.startswith(".") and path.name.endswith((".tmp", ".lock")):
            continue
        files[safe_member(path.relative_to(source).as_posix())] = path
    return files


def _copy_verified(source: Path, target: Path, expected: str) -> None:
    """Copy to a temp name beside ``target``, fsync, rename, and read it back."""
    with atomic_output(target) as out, open(source, "rb") as handle:
        shutil.copyfileobj(handle, out, CHUNK)
    found = sha256_file(target)
    if found != expected:
        target.unlink(missing_ok=True)
        raise CheckFailed("the copy does not match its source", file=str(target), expected=expected, found=found)


def move_run(workspace: Path, source: Path, destination: Path, log=None) -> dict:
    """Copy, verify, record, then remove the source (see the module docstring).

    Returns ``{"files": {name: {sha256, size}}, ...counts}``; the counts say
    how the move went (logged, not part of the report: a resumed move and
    an uninterrupted one produce the same record).
    """
    manifest_path = destination / MANIFEST_NAME
    previous = read_json(manifest_path)["files"] if manifest_path.exists() else {}
    current = source_files(workspace, source) if source.exists() else {}
    if not current and not previous:
        raise InputError("nothing to archive: the source has no files", file=str(source))

    entries = dict(previous)
    copied = kept = 0
    for name, path in current.items():
        digest = sha256_file(path)
        entry = {"sha256": digest, "size": path.stat().st_size}
        target = destination / name
        if target.is_file() and sha256_file(target) == digest:
            kept += 1
        else:
            _copy_verified(path, target, digest)
            copied += 1
        entries[name] = entry
    for name, entry in entries.items():  # everything the manifest will claim is in place
        target = destination / name
        if not target.is_file() or sha256_file(target) != entry["sha256"]:
            raise CheckFailed("an archived file is missing or damaged; its source is gone", file=str(target))

    with atomic_output(manifest_path) as handle:
        handle.write(canonical_json({"format": "crh-archive", "version": 1,
                                     "source": relative_to_workspace(workspace, source), "files": entries}))
    removed = 0
    for name, path in current.items():
        if path.exists() and sha256_file(path) == entries[name]["sha256"]:
            path.unlink()
            removed += 1
    if source.exists():
        for folder in sorted((p for p in source.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(source.iterdir()):
            source.rmdir()
    if log is not None:
        log.info("moved", files=len(entries), copied=copied, already_in_place=kept, removed_from_source=removed)
    return {"files": entries, "copied": copied, "already_in_place": kept, "removed_from_source": removed}


def registry_moves(workspace: Path, source: Path, destination: Path, entries: dict):
    """A registry change: entries follow their files, keeping the run that produced them."""
    old_root = relative_to_workspace(workspace, source)
    new_root = relative_to_workspace(workspace, destination)

    def change(files):
        for name, entry in entries.items():
            old = files.pop(f"{old_root}/{name}", None)
            if old is not None and old.get("sha256") == entry["sha256"]:
                files[f"{new_root}/{name}"] = old

    return change


def archive_time() -> int:
    """Entry times: SOURCE_DATE_EPOCH, else 0 (the bytes must not depend on the clock)."""
    return time_utils.source_date_epoch() or 0


def pack(destination: Path, kind: str, target: Path) -> None:
    """Write a deterministic tar.gz or zip of ``destination`` (prefixed with its name)."""
    names = sorted(str(p.relative_to(destination).as_posix()) for p in destination.rglob("*") if p.is_file())
    prefix = destination.name
    mtime = archive_time()
    with atomic_output(target) as out:
        if kind == "tar.gz":
            with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=mtime, compresslevel=9) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name in names:
                    data = (destination / name).read_bytes()
                    info = tarfile.TarInfo(f"{prefix}/{name}")
                    info.size, info.mtime, info.mode = len(data), mtime, 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
        else:
            stamp = datetime.fromtimestamp(max(mtime, 315532800), timezone.utc).timetuple()[:6]  # zip starts in 1980
            with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
                for name in names:
                    info = zipfile.ZipInfo(f"{prefix}/{name}", date_time=stamp)
                    info.create_system = 3  # Unix, on every platform
                    info.external_attr = 0o100644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, (destination / name).read_bytes())


def verify_archive(path: Path) -> dict:
    """Re-hash every member against the manifest inside the archive (one pass over it)."""
    members, contents = {}, {}

    def take(name: str, data: bytes) -> None:
        members[name] = hashlib.sha256(data).hexdigest()
        if name.endswith("/" + MANIFEST_NAME) and name.count("/") == 1:
            contents[name] = data

    try:
        if path.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(path, "r:gz") as tar:
                for member in tar.getmembers():
                    name = safe_member(member.name)
                    if not member.isfile():
                        raise InputError("archive member is not a regular file", file=str(path), member=name)
                    take(name, tar.extractfile(member).read())
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    take(safe_member(info.filename), archive.read(info))
        else:
            raise InputError("unknown archive type: use .tar.gz or .zip", file=str(path))
    except FileNotFoundError:
        raise InputError("archive not found", file=str(path))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise InputError(f"corrupt archive: {exc}", file=str(path))
    if len(contents) != 1:
        raise InputError(f"the archive holds no single top-level {MANIFEST_NAME}", file=str(path))
    (manifest_name, raw), = contents.items()
    prefix = manifest_name.split("/")[0]
    expected = orjson.loads(raw)["files"]
    result = {"matched": [], "changed": [], "missing": [], "unexpected": []}
    for name, entry in sorted(expected.items()):
        found = members.get(f"{prefix}/{name}")
        if found is None:
            result["missing"].append(name)
        elif found != entry["sha256"]:
            result["changed"].append(name)
        else:
            result["matched"].append(name)
    result["unexpected"] = sorted(n[len(prefix) + 1:] for n in members
                                  if n != manifest_name and n[len(prefix) + 1:] not in expected)
    return result


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "archive_results",
        description="Move a run's outputs into an archive folder (copy, verify, remove), optionally pack a\n"
                    "deterministic tar.gz or zip; or --verify an archive.",
        example="python scripts/orchestration/archive_results.py runs/scratch_42 --archive tar.gz",
    )
    parser.add_argument("source", nargs="?", metavar="RUN_DIR", help="the folder to archive (inside the workspace)")
    parser.add_argument("--dest", metavar="DIR", help=f"destination (default: <workspace>/{DEFAULT_ARCHIVE_DIR}/<source name>)")
    parser.add_argument("--archive", choices=("tar.gz", "zip"), help="also pack the destination into this archive")
    parser.add_argument("--verify", metavar="ARCHIVE", help="re-check every member of ARCHIVE; exit 1 on a difference")
    cli.add_common_options(parser)

    def run(args, log):
        workspace = resolve_workspace(args.workspace)
        if args.verify:
            result = verify_archive(Path(args.verify))
            summary = {key: len(value) for key, value in result.items()}
            log.info("verified", archive=args.verify, **summary)
            if summary["changed"] or summary["missing"] or summary["unexpected"]:
                raise CheckFailed("the archive differs from its manifest", archive=args.verify, **summary,
                                  first=(result["changed"] + result["missing"] + result["unexpected"])[0])
            return 0
        if not args.source:
            parser.error("give a RUN_DIR to archive, or --verify ARCHIVE")
        source = Path(args.source).absolute()
        relative_to_workspace(workspace, source)  # refuses a source outside the workspace
        destination = Path(args.dest).absolute() if args.dest else workspace / DEFAULT_ARCHIVE_DIR / source.name
        relative_to_workspace(workspace, destination)
        if source.resolve() == destination.resolve() or destination.resolve().is_relative_to(source.resolve()):
            raise InputError("the destination cannot be the source or inside it", file=str(destination))
        if not source.exists() and not (destination / MANIFEST_NAME).exists():
            raise InputError("source not found", file=args.source)
        with RunRecorder("archive_results", workspace=workspace, log=log,
                         config={"source": relative_to_workspace(workspace, source),
                                 "destination": relative_to_workspace(workspace, destination),
                                 "archive": args.archive}) as record:
            moved = move_run(workspace, source, destination, log)
            record.change_registry(registry_moves(workspace, source, destination, moved["files"]))
            record.claim_output(destination / MANIFEST_NAME)
            record.results.update(files=len(moved["files"]), destination=relative_to_workspace(workspace, destination))
            if args.archive:
                target = destination.with_name(f"{destination.name}.{args.archive}")
                pack(destination, args.archive, target)
                record.claim_output(target)
                record.results["archive"] = relative_to_workspace(workspace, target)
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
