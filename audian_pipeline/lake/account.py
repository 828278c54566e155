"""Which Audian account a data directory holds: `<AUDIAN_DATA_DIR>/account.json`.

Two accounts' recordings in one lake contradict each other: each listing marks the other's rows
deleted, the warehouse counts both, and the reports show removals Audian never made. So the
first run that talks to the API records whose lake this is, and every later run against another
account is refused with one line, before it writes anything.

What identifies an account is what the API lets us see:
- the embedded emulator says which generated account it serves (`GET /_emulator/account`:
  seed, size, variations and the instant its history was generated from); two emulators with
  the same parameters serve the same recordings, whatever their port;
- a real Audian does not, so its account is the API's base URL plus a fingerprint of the key
  (a SHA-256 prefix under a fixed label, never the key). A new key for the same account is
  refused too: the message says how to carry on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audian_pipeline.lake.files import atomic_writer
from audian_pipeline.settings import SettingError

MARKER = "account.json"


class ForeignAccountError(SettingError):
    """AUDIAN_DATA_DIR holds another account's lake; the message names both and the fix."""


@dataclass(frozen=True)
class AccountIdentity:
    kind: str
    """`emulator` or `audian`."""
    account_id: str
    """What two runs must agree on."""
    description: str
    """The account in a person's words, for the refusal message."""
    details: dict[str, Any]
    """Emulator: the parameters that regenerate its account. Audian: the base URL and key fingerprint."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "account_id": self.account_id, "description": self.description,
                "details": self.details}


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def emulator_identity(params: dict[str, Any]) -> AccountIdentity:
    """From the emulator's own account parameters (see `emulator.server.account_parameters`)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    description = (f"emulator seed {params.get('seed')}, {params.get('days')} days of {params.get('per_day')} "
                   f"recordings, generated at {params.get('epoch')}")
    return AccountIdentity("emulator", "emulator-" + _digest(canonical), description, params)


def audian_identity(api_url: str, api_key: str) -> AccountIdentity:
    """A real Audian account: base URL plus a key fingerprint. The label keeps the hash useless
    for anything but this comparison; 16 hex digits cannot be turned back into a key."""
    fingerprint = "sha256:" + _digest("audian-pipeline account fingerprint", api_key)
    return AccountIdentity("audian", f"audian-{_digest(api_url, fingerprint)}",
                           f"Audian at {api_url} with key {fingerprint}",
                           {"api_url": api_url, "key_fingerprint": fingerprint})


def read_marker(data_dir: Path) -> AccountIdentity | None:
    path = data_dir / MARKER
    try:
        raw = json.loads(path.read_text())
        return AccountIdentity(raw["kind"], raw["account_id"], raw["description"], raw["details"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise ForeignAccountError(
            f"{path} is not a readable account marker: restore it, or delete it if AUDIAN_DATA_DIR={data_dir} "
            "holds only this account's data.") from None


def claim(data_dir: Path, identity: AccountIdentity) -> None:
    """Record `identity` as this data directory's account, or refuse a different one."""
    held = read_marker(data_dir)
    if held is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        with atomic_writer(data_dir / MARKER) as out:
            out.write(json.dumps(identity.to_json(), indent=2, sort_keys=True).encode() + b"\n")
        return
    if held.account_id == identity.account_id:
        return
    same_api = held.kind == identity.kind == "audian" and held.details.get("api_url") == identity.details["api_url"]
    rotated = f"; if only the key changed, delete {data_dir / MARKER}" if same_api else ""
    raise ForeignAccountError(
        f"AUDIAN_DATA_DIR={data_dir} holds the lake of another account ({held.description}), not of "
        f"the API this run reads ({identity.description}): set AUDIAN_DATA_DIR to another directory, "
        f"or delete {data_dir} to start over with this account{rotated}."
    )
