"""Signed claims about files: in-toto statements (v1) in DSSE envelopes, signed with Ed25519.

    from scripts.utils.records import signing
    signer = signing.workspace_signer(workspace)             # made once, kept in .keys/
    statement = signing.statement({"a.txt": "ab12…"}, signing.PREDICATE_TYPE, {"claim": …})
    envelope = signing.sign(signer, statement)                # bytes: the DSSE envelope, JSON
    statement = signing.verified_statement(envelope, signing.public_key(pem))

The signing and verifying are securesystemslib's (DSSE's pre-authentication
encoding, Ed25519 through cryptography); this module only decides where the
key lives and what is signed. Ed25519 signatures are deterministic: the same
statement signed with the same key gives the same bytes.

A workspace's key is made the first time it is needed, at
``<workspace>/.keys/ed25519.pem`` (PKCS#8, readable by its owner only): a
hidden folder, so never an output, never copied by a rerun or an archive.
``--key PATH`` anywhere takes another (a lab's key, kept elsewhere).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, holding, lock_for

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "urn:crh:reproduction-claim:v1"
KEY_FOLDER = ".keys"
KEY_FILE = "ed25519.pem"


class ProofError(Exception):
    """A signature or statement that does not check out (the checker names it; not bad input)."""


def workspace_key_path(workspace: Path) -> Path:
    return Path(workspace) / KEY_FOLDER / KEY_FILE


def workspace_signer(workspace: Path, key_path: Path | None = None) -> CryptoSigner:
    """The signer of ``key_path`` if given (it must exist), else the workspace's own key, made on
    first use."""
    if key_path is not None:
        return load_signer(Path(key_path))
    path = workspace_key_path(workspace)
    with holding(lock_for(path), path):
        if not path.exists():
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            atomic_write_bytes(path, pem)
            try:
                os.chmod(path, 0o600)
            except OSError:  # a file system without POSIX modes: the folder's own rights hold
                pass
    return load_signer(path)


def load_signer(path: Path) -> CryptoSigner:
    """An Ed25519 private key (PEM, PKCS#8, unencrypted) as a signer; anything else is bad input."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError("signing key not found", file=path)
    except OSError as exc:
        raise InputError(f"cannot read the signing key: {exc.strerror}", file=path)
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InputError("not an unencrypted PEM private key", file=path)
    if not isinstance(private, Ed25519PrivateKey):
        raise InputError("the signing key must be an Ed25519 key", file=path)
    return CryptoSigner(private)


def public_key_pem(signer: CryptoSigner) -> bytes:
    """The signer's public key as PEM (SubjectPublicKeyInfo): what travels with a crate."""
    raw = bytes.fromhex(signer.public_key.keyval["public"])
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key(pem: bytes, source="public key") -> SSlibKey:
    """An Ed25519 public key from PEM; ProofError when it is not one."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ProofError(f"{source}: not a PEM public key")
    if not isinstance(key, Ed25519PublicKey):
        raise ProofError(f"{source}: not an Ed25519 public key")
    return SSlibKey.from_crypto(key)


def statement(subjects: dict, predicate_type: str, predicate: dict) -> dict:
    """An in-toto statement v1: ``subjects`` {name: sha256 hex}, in name order."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": subjects[name]}} for name in sorted(subjects)
        ],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def sign(signer: CryptoSigner, claim: dict) -> bytes:
    """The DSSE envelope (canonical JSON) of ``claim`` signed by ``signer``."""
    envelope = Envelope(payload=canonical_json(claim), payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(signer)
    return canonical_json(envelope.to_dict())


def verified_statement(envelope_bytes: bytes, key: SSlibKey) -> dict:
    """The statement inside a DSSE envelope, once its signature verifies against ``key``;
    ProofError naming what does not hold."""
    try:
        document = orjson.loads(envelope_bytes)
        envelope = Envelope.from_dict(dict(document))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise ProofError(
            "the envelope is not a DSSE envelope (JSON with payload, payloadType, signatures)"
        )
    if envelope.payload_type != PAYLOAD_TYPE:
        raise ProofError(
            f"the envelope's payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE!r}"
        )
    if not envelope.signatures:
        raise ProofError("the envelope holds no signature")
    if key.keyid not in envelope.signatures:
        raise ProofError(
            f"the envelope is signed by key {', '.join(sorted(envelope.signatures))}, not by "
            f"the given key {key.keyid}"
        )
    try:
        envelope.verify([key], 1)
    except VerificationError:
        raise ProofError(f"the signature does not verify against key {key.keyid}")
    try:
        claim = orjson.loads(envelope.payload)
    except orjson.JSONDecodeError:
        raise ProofError("the signed payload is not JSON")
    if not isinstance(claim, dict) or claim.get("_type") != STATEMENT_TYPE:
        raise ProofError(f"the signed payload is not an in-toto statement ({STATEMENT_TYPE})")
    return claim


def payload_of(envelope_bytes: bytes) -> dict | None:
    """The envelope's payload read without checking the signature (to say what it claims when the
    signature fails); None if unreadable."""
    try:
        return orjson.loads(base64.b64decode(orjson.loads(envelope_bytes)["payload"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
