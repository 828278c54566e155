"""Encryption at rest of the archive: Tink's streaming AEAD under a keyset file (AUDIAN_ARCHIVE_KEYSET).

Recordings hold card numbers, health details and voices, so an archive readable by whoever can
list the bucket is a liability. Tink's `AES256_GCM_HKDF_1MB` is a reviewed, documented format
(segments of 1 MiB, each authenticated, the last one marked so truncation is detected), with
key rotation built in: a keyset holds every key ever used, the primary one encrypts, and each
ciphertext names no key yet still decrypts under any key of the set. Memory stays a few
segments whatever the file's size.

The recording id is the associated data of its ciphertext: an object copied under another
recording's name fails to decrypt instead of passing for that recording.

The keyset is a secret like the API key: its path may be shown, never its content; Tink's own
errors name no key material, and ours say only what failed and what to do.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import tink
from tink import secret_key_access, streaming_aead
from tink.proto import tink_pb2

from audian_pipeline.lake.files import fsync_path, temp_path_for
from audian_pipeline.settings import SettingError, env_value

KEYSET_SETTING = "AUDIAN_ARCHIVE_KEYSET"
ENCRYPTED_SUFFIX = ".tink"
"""Added to an encrypted object's key (`<id>.mp3.tink`): a person listing the bucket sees that
it is not playable, and a plaintext and a ciphertext of one recording never share a key."""
CHUNK = 1024 * 1024
_TEMPLATE = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB
_KEY_TYPE = _TEMPLATE.type_url

streaming_aead.register()


class KeysetError(SettingError):
    """The keyset file is missing, unreadable or not a streaming AEAD keyset."""


class DecryptionFailed(RuntimeError):
    """The ciphertext does not authenticate: tampered, truncated, another recording's, or
    encrypted under a key this keyset does not hold."""


@dataclass(frozen=True)
class ArchiveCipher:
    """The archive's streaming AEAD, loaded once from the keyset file."""

    primitive: streaming_aead.StreamingAead
    key_id: int
    """The primary key's id: the key new objects are encrypted under (recorded in the manifest)."""
    keyset_path: Path

    def __repr__(self) -> str:  # never the keys, even in a traceback's locals
        return f"ArchiveCipher({KEYSET_SETTING}={self.keyset_path}, key_id={self.key_id})"

    def encrypt_file(self, source: Path, target: Path, recording_id: str) -> int:
        """Encrypt a local file into `target` (fsynced); returns the ciphertext's size."""
        with open(source, "rb") as plain:
            destination = open(target, "wb")
            with self.primitive.new_encrypting_stream(destination, recording_id.encode()) as sealed:
                while chunk := plain.read(CHUNK):
                    sealed.write(chunk)
        fsync_path(target)  # closing Tink's stream closed `destination` too
        return target.stat().st_size

    def decrypt(self, ciphertext: BinaryIO, sink: BinaryIO, recording_id: str,
                on_chunk: Callable[[bytes], object] | None = None) -> int:
        """Stream the plaintext into `sink`; returns its size. A failure may come after part of the
        plaintext was written: callers write to a temporary and keep it only on success."""
        written = 0
        try:
            with self.primitive.new_decrypting_stream(ciphertext, recording_id.encode()) as plain:
                while chunk := plain.read(CHUNK):
                    sink.write(chunk)
                    written += len(chunk)
                    if on_chunk is not None:
                        on_chunk(chunk)
        except tink.TinkError:
            raise DecryptionFailed(
                f"the archived object of {recording_id} does not decrypt under {KEYSET_SETTING}={self.keyset_path}: "
                "it was altered or cut short, or encrypted under a key this keyset does not hold") from None
        return written


def cipher_from_env(value: str | None = None) -> ArchiveCipher | None:
    """AUDIAN_ARCHIVE_KEYSET's cipher, or None when unset (the archive is then plaintext)."""
    path = value if value is not None else env_value(KEYSET_SETTING, "")
    return load_cipher(Path(path)) if path else None


def load_cipher(path: Path) -> ArchiveCipher:
    handle = _read_handle(path)
    return ArchiveCipher(handle.primitive(streaming_aead.StreamingAead), handle.keyset_info().primary_key_id,
                         path.expanduser().resolve())


def create_keyset(path: Path) -> int:
    """Write a new keyset with one key (mode 0600); an existing file is never replaced, since
    overwriting a keyset makes every object encrypted under it unreadable. Returns the key id."""
    handle = tink.new_keyset_handle(_TEMPLATE)
    _write_new(path, _to_json(handle))
    return int(handle.keyset_info().primary_key_id)


def rotate_keyset(path: Path) -> int:
    """Add a new key and make it the primary one; every older key stays, so older objects still
    decrypt. The file is replaced whole (0600). Returns the new key id."""
    keyset = tink_pb2.Keyset.FromString(
        tink.proto_keyset_format.serialize(_read_handle(path), secret_key_access.TOKEN))
    fresh = tink_pb2.Keyset.FromString(
        tink.proto_keyset_format.serialize(tink.new_keyset_handle(_TEMPLATE), secret_key_access.TOKEN))
    new_key = fresh.key[0]
    while any(k.key_id == new_key.key_id for k in keyset.key):  # a 32-bit id may collide
        fresh = tink_pb2.Keyset.FromString(
            tink.proto_keyset_format.serialize(tink.new_keyset_handle(_TEMPLATE), secret_key_access.TOKEN))
        new_key = fresh.key[0]
    keyset.key.append(new_key)
    keyset.primary_key_id = new_key.key_id
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    _replace(path, _to_json(handle))
    return int(new_key.key_id)


def _to_json(handle: tink.KeysetHandle) -> bytes:
    return (tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN) + "\n").encode()


def _read_handle(path: Path) -> tink.KeysetHandle:
    where = f"{KEYSET_SETTING}={path}"
    try:
        text = path.expanduser().read_text()
    except FileNotFoundError:
        raise KeysetError(f"{where}: no such file; create one with `audian-pipeline keyset create {path}` "
                          "or point the setting at the keyset the archive was encrypted with") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysetError(f"{where} cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__}); "
                          "make it readable by this user") from None
    try:
        handle = tink.json_proto_keyset_format.parse(text, secret_key_access.TOKEN)
    except (tink.TinkError, ValueError):
        raise KeysetError(f"{where} is not a Tink keyset in JSON; use the file `audian-pipeline keyset create` "
                          "wrote") from None
    if any(k.type_url != _KEY_TYPE for k in handle.keyset_info().key_info):
        raise KeysetError(f"{where} holds keys other than streaming AEAD (AES256_GCM_HKDF_1MB); "
                          "create the archive's keyset with `audian-pipeline keyset create`")
    return handle


def _write_new(path: Path, content: bytes) -> None:
    """Written beside, then hard-linked to the name: the link fails if the name exists, so the
    check and the creation are one step, and the file appears whole or not at all."""
    temp = _write_private(path, content)
    try:
        os.link(temp, path)
    except FileExistsError:
        raise KeysetError(f"{path} already exists: a keyset is never overwritten (objects encrypted under it "
                          f"would be lost); use `audian-pipeline keyset rotate {path}` for a new key") from None
    finally:
        temp.unlink(missing_ok=True)
    fsync_path(path.parent)


def _replace(path: Path, content: bytes) -> None:
    temp = _write_private(path, content)
    try:
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_path(path.parent)


def _write_private(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    os.close(fd)
    return temp
