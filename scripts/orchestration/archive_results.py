"""Move a run's outputs into an archive folder losslessly; pack and verify archives.

    # -> experiments/results/archive/scratch_42/
    python scripts/orchestration/archive_results.py runs/scratch_42
    # and a deterministic tarball:
    python scripts/orchestration/archive_results.py runs/scratch_42 --archive tar.gz
    python scripts/orchestration/archive_results.py \\
        --verify experiments/results/archive/scratch_42.tar.gz

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
of the workspace is refused with exit 2. So is, before anything moves: a
source holding the workspace's registry, manifest or chronicle (``data/``,
``meta/``), a symbolic link loop, a FIFO, socket or device, a hard link to a
file outside the workspace, and a name that is not valid UTF-8. Temp and
lock files (``.NAME.*.tmp``, ``.NAME.lock``) are never moved or packed: an
archive holds exactly the files its manifest lists, and the manifest.

``--verify`` reads members as streams (bounded memory whatever their size or
compression ratio) and refuses members that are not regular files (links,
folders, devices) in tar and zip alike, and a manifest that is not the
expected JSON.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat as stat_module
import sys
import tarfile
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import orjson

from scripts.utils import cli, timestamps
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import atomic_output, canonical_json
from scripts.utils.limits import name_hex, printable_name, read_input_bytes, regular_file
from scripts.utils.records.data_roots import is_bookkeeping
from scripts.utils.records.registry import MANIFEST, REGISTRY
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import inside, relative_to_workspace, resolve_workspace

MANIFEST_NAME = "MANIFEST.json"
DEFAULT_ARCHIVE_DIR = "experiments/results/archive"
CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 256 * 1024**2
PROTECTED = (REGISTRY, MANIFEST, "meta/chronicle")  # the workspace's own records: never archived


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safe_member(name: str) -> str:
    """A relative POSIX member name; ``..``, absolute and drive paths are refused."""
    if printable_name(name) != name:
        raise InputError("member name is not valid UTF-8", file=printable_name(name))
    posix = PurePosixPath(name.replace("\\", "/"))
    if (
        posix.is_absolute()
        or ".." in posix.parts
        or (posix.parts and ":" in posix.parts[0])
        or not posix.parts
    ):
        raise InputError("path escapes its folder (absolute, drive or '..')", file=name)
    return posix.as_posix()


def check_source(workspace: Path, source: Path) -> None:
    """Refuse a source that holds the workspace's own records (the registry, manifest,
    chronicle)."""
    for protected in PROTECTED:
        if inside(source, workspace / protected):
            raise InputError(
                f"this folder holds the workspace's {protected}: it cannot be archived",
                file=str(source),
            )


def source_files(workspace: Path, source: Path) -> dict:
    """``{relative name: absolute path}`` of the source's files, checked before anything moves.

    Refused (exit 2): a link out of the workspace or in a loop, a FIFO,
    socket or device, a hard link to a file outside the workspace, a name
    that is not valid UTF-8. A link to a folder is left where it is.
    """
    files, hard_links = {}, {}
    stack = [source]
    while stack:
        folder = stack.pop()
        for entry in os.scandir(folder):
            path = Path(entry.path)
            relative = path.relative_to(source).as_posix()
            if printable_name(entry.name) != entry.name:
                raise InputError(
                    "file name is not valid UTF-8: rename it before archiving",
                    file=printable_name(relative),
                    name_hex=name_hex(relative),
                )
            info = entry.stat(follow_symlinks=False)
            if stat_module.S_ISDIR(info.st_mode):
                stack.append(path)
                continue
            if stat_module.S_ISLNK(info.st_mode):
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise InputError("symbolic link loops or points nowhere", file=relative)
                relative_to_workspace(workspace, target)  # raises when the link points out
                if not target.is_file():
                    continue
            elif not stat_module.S_ISREG(info.st_mode):
                raise InputError(
                    "not a regular file (a FIFO, socket or device): it cannot be archived",
                    file=relative,
                )
            elif info.st_nlink > 1:
                hard_links[(info.st_dev, info.st_ino)] = (relative, info.st_nlink)
            if is_bookkeeping(entry.name):
                continue
            files[safe_member(relative)] = path
    _check_hard_links(workspace, source, hard_links)
    return dict(sorted(files.items()))


def _check_hard_links(workspace: Path, source: Path, hard_links: dict) -> None:
    """Every other link of a hard-linked file must lie in the workspace (else it is someone
    else's file)."""
    if not hard_links:
        return
    seen = {key: 0 for key in hard_links}
    for folder, _folders, names in os.walk(workspace):
        for name in names:
            try:
                info = os.stat(os.path.join(folder, name), follow_symlinks=False)
            except OSError:
                continue
            key = (info.st_dev, info.st_ino)
            if key in seen:
                seen[key] += 1
    for key, (relative, links) in sorted(hard_links.items(), key=lambda item: item[1]):
        if seen[key] < links:
            raise InputError(
                f"hard link to a file outside the workspace ({links - seen[key]} of its {links} "
                f"links lie elsewhere): copy it in first",
                file=relative,
            )


def checked_manifest(raw: bytes, where: str) -> dict:
    """The ``files`` of an archive manifest: ``{name: {sha256, size}}``; anything else is bad
    input."""
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"{MANIFEST_NAME} is not valid JSON: {exc.msg}",
            file=where,
            line=exc.lineno,
            column=exc.colno,
        )
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise InputError(f"{MANIFEST_NAME} must be an object with a 'files' object", file=where)
    for name, entry in files.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("size"), int)
        ):
            raise InputError(
                f"{MANIFEST_NAME} entry is not {{sha256, size}}", file=where, member=name
            )
        safe_member(name)
    return files


def _copy_verified(source: Path, target: Path, expected: str) -> None:
    """Copy to a temp name beside ``target``, fsync, rename, and read it back."""
    with atomic_output(target) as out, open(source, "rb") as handle:
        shutil.copyfileobj(handle, out, CHUNK)
    found = sha256_file(target)
    if found != expected:
        target.unlink(missing_ok=True)
        raise CheckFailed(
            "the copy does not match its source", file=str(target), expected=expected, found=found
        )


def move_run(workspace: Path, source: Path, destination: Path, log=None) -> dict:
    """Copy, verify, record, then remove the source (see the module docstring).

    Returns ``{"files": {name: {sha256, size}}, ...counts}``; the counts say
    how the move went (logged, not part of the report: a resumed move and
    an uninterrupted one produce the same record).
    """
    manifest_path = destination / MANIFEST_NAME
    previous = (
        checked_manifest(
            read_input_bytes(manifest_path, MAX_MANIFEST_BYTES, MANIFEST_NAME), str(manifest_path)
        )
        if manifest_path.exists()
        else {}
    )
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
            raise CheckFailed(
                "an archived file is missing or damaged; its source is gone", file=str(target)
            )

    with atomic_output(manifest_path) as handle:
        handle.write(
            canonical_json(
                {
                    "format": "crh-archive",
                    "version": 1,
                    "source": relative_to_workspace(workspace, source),
                    "files": entries,
                }
            )
        )
    removed = 0
    for name, path in current.items():
        if path.exists() and sha256_file(path) == entries[name]["sha256"]:
            path.unlink()
            removed += 1
    if source.exists():
        for folder in sorted(
            (p for p in source.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(source.iterdir()):
            source.rmdir()
    if log is not None:
        log.info(
            "moved",
            files=len(entries),
            copied=copied,
            already_in_place=kept,
            removed_from_source=removed,
        )
    return {
        "files": entries,
        "copied": copied,
        "already_in_place": kept,
        "removed_from_source": removed,
    }


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
    return timestamps.source_date_epoch() or 0


def pack(destination: Path, kind: str, target: Path, files) -> None:
    """Write a deterministic tar.gz or zip of ``files`` under ``destination``, and its manifest
    (prefixed with its name).

    Only those: a temp file an interrupted copy left in the destination is never packed.
    """
    names = sorted({*files, MANIFEST_NAME})
    prefix = destination.name
    mtime = archive_time()
    with atomic_output(target) as out:
        if kind == "tar.gz":
            with (
                gzip.GzipFile(
                    filename="", mode="wb", fileobj=out, mtime=mtime, compresslevel=9
                ) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
            ):
                for name in names:
                    info = tarfile.TarInfo(f"{prefix}/{name}")
                    info.size, info.mtime, info.mode = (
                        (destination / name).stat().st_size,
                        mtime,
                        0o644,
                    )
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(destination / name, "rb") as member:
                        tar.addfile(info, member)
        else:
            stamp = datetime.fromtimestamp(max(mtime, 315532800), timezone.utc).timetuple()[
                :6
            ]  # zip starts in 1980
            with zipfile.ZipFile(
                out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9
            ) as archive:
                for name in names:
                    info = zipfile.ZipInfo(f"{prefix}/{name}", date_time=stamp)
                    info.create_system = 3  # Unix, on every platform
                    info.external_attr = 0o100644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with (
                        open(destination / name, "rb") as member,
                        archive.open(info, "w", force_zip64=True) as out,
                    ):
                        shutil.copyfileobj(member, out, CHUNK)


def verify_archive(path: Path) -> dict:
    """Re-hash every member against the manifest inside the archive (one streaming pass over it)."""
    members, contents = {}, {}

    def take(name: str, stream) -> None:
        is_manifest = name.endswith("/" + MANIFEST_NAME) and name.count("/") == 1
        digest, kept, size = hashlib.sha256(), [], 0
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if is_manifest:
                if size > MAX_MANIFEST_BYTES:
                    raise InputError(
                        f"{MANIFEST_NAME} is over {MAX_MANIFEST_BYTES:,} bytes",
                        file=str(path),
                        member=name,
                    )
                kept.append(chunk)
        members[name] = digest.hexdigest()
        if is_manifest:
            contents[name] = b"".join(kept)

    regular_file(path, "archive")
    try:
        if path.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    name = safe_member(member.name)
                    if not member.isfile():
                        raise InputError(
                            "archive member is not a regular file", file=str(path), member=name
                        )
                    with tar.extractfile(member) as stream:
                        take(name, stream)
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = safe_member(info.filename)
                    kind = stat_module.S_IFMT(info.external_attr >> 16)
                    if info.is_dir() or (
                        info.create_system == 3 and kind not in (0, stat_module.S_IFREG)
                    ):
                        raise InputError(
                            "archive member is not a regular file", file=str(path), member=name
                        )
                    with archive.open(info) as stream:
                        take(name, stream)
        else:
            raise InputError("unknown archive type: use .tar.gz or .zip", file=str(path))
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
        ValueError,
    ) as exc:
        raise InputError(f"corrupt or unreadable archive: {exc}", file=str(path))
    if len(contents) != 1:
        raise InputError(f"the archive holds no single top-level {MANIFEST_NAME}", file=str(path))
    ((manifest_name, raw),) = contents.items()
    prefix = manifest_name.split("/")[0]
    expected = checked_manifest(raw, f"{path}:{manifest_name}")
    result = {"matched": [], "changed": [], "missing": [], "unexpected": []}
    for name, entry in sorted(expected.items()):
        found = members.get(f"{prefix}/{name}")
        if found is None:
            result["missing"].append(name)
        elif found != entry["sha256"]:
            result["changed"].append(name)
        else:
            result["matched"].append(name)
    result["unexpected"] = sorted(
        n[len(prefix) + 1 :]
        for n in members
        if n != manifest_name and n[len(prefix) + 1 :] not in expected
    )
    return result


def archive_or_verify(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    if args.verify:
        result = verify_archive(Path(args.verify))
        summary = {key: len(value) for key, value in result.items()}
        log.info("verified", archive=args.verify, **summary)
        if summary["changed"] or summary["missing"] or summary["unexpected"]:
            raise CheckFailed(
                "the archive differs from its manifest",
                archive=args.verify,
                **summary,
                first=(result["changed"] + result["missing"] + result["unexpected"])[0],
            )
        return 0
    if not args.source:
        raise InputError("give a RUN_DIR to archive, or --verify ARCHIVE")
    source = Path(args.source).absolute()
    relative_to_workspace(workspace, source)  # refuses a source outside the workspace
    destination = (
        Path(args.dest).absolute() if args.dest else workspace / DEFAULT_ARCHIVE_DIR / source.name
    )
    relative_to_workspace(workspace, destination)
    if source.resolve() == destination.resolve() or destination.resolve().is_relative_to(
        source.resolve()
    ):
        raise InputError("the destination cannot be the source or inside it", file=str(destination))
    check_source(workspace, source.resolve())
    if not source.exists() and not (destination / MANIFEST_NAME).exists():
        raise InputError("source not found", file=args.source)
    with RunRecorder(
        "archive_results",
        argv=args.argv,
        workspace=workspace,
        log=log,
        config={
            "source": relative_to_workspace(workspace, source),
            "destination": relative_to_workspace(workspace, destination),
            "archive": args.archive,
        },
    ) as record:
        moved = move_run(workspace, source, destination, log)
        record.change_registry(registry_moves(workspace, source, destination, moved["files"]))
        record.consume(destination)  # the run's files, read to pack and check them, now there
        record.claim_output(destination / MANIFEST_NAME)
        record.results.update(
            files=len(moved["files"]), destination=relative_to_workspace(workspace, destination)
        )
        if args.archive:
            target = destination.with_name(f"{destination.name}.{args.archive}")
            pack(destination, args.archive, target, moved["files"])
            record.claim_output(target)
            record.results["archive"] = relative_to_workspace(workspace, target)
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "archive_results",
        doc=__doc__,
        description="Move a run's outputs into an archive folder (copy, verify, remove), "
        "optionally pack a\ndeterministic tar.gz or zip; or --verify an archive.",
        example="python scripts/orchestration/archive_results.py runs/scratch_42 --archive tar.gz",
    )
    parser.add_argument(
        "source", nargs="?", metavar="RUN_DIR", help="the folder to archive (inside the workspace)"
    )
    parser.add_argument(
        "--dest",
        metavar="DIR",
        help=f"destination (default: <workspace>/{DEFAULT_ARCHIVE_DIR}/<source name>)",
    )
    parser.add_argument(
        "--archive", choices=("tar.gz", "zip"), help="also pack the destination into this archive"
    )
    parser.add_argument(
        "--verify",
        metavar="ARCHIVE",
        help="re-check every member of ARCHIVE; exit 1 on a difference",
    )
    cli.add_common_options(parser)
    return cli.run(parser, archive_or_verify, argv)


if __name__ == "__main__":
    sys.exit(main())
