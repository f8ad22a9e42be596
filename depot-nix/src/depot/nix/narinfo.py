"""The ``.narinfo`` format (``src/libstore/nar-info.cc``): parse, check and write.

A narinfo is ``Key: value`` lines. ``StorePath``, ``URL``, ``NarHash`` and a non-zero ``NarSize``
are required; a missing ``Compression`` means bzip2, so depot always writes it. Hashes are written
``sha256:<nix32>``; ``References`` and ``Deriver`` are base names; ``Sig`` may repeat.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from depot.nix.nixbase32 import Hash
from depot.nix.signing import PublicKey, SecretKey, Signature, fingerprint
from depot.nix.storepath import STORE_DIR, base_name_of, check_base_name, hash_part_of

#: Compressions ``nix copy`` may use, with the file extension it gives each NAR.
#: Compressions Nix knows (``src/libutil/compression.cc``); depot verifies those it can decompress.
COMPRESSIONS = frozenset({"none", "xz", "bzip2", "gzip", "zstd", "br", "lzip", "lz4"})

#: NAR file URLs as ``nix copy`` writes them: ``nar/<file hash>.nar<ext>``, where gzip and none
#: both get no extension (``binary-cache-store.cc``), so the narinfo's Compression decides.
NAR_URL = re.compile(
    r"^nar/([0-9a-df-np-sv-z]{52})\.nar(\.xz|\.bz2|\.zst|\.br|\.lzip|\.lz4|\.gz)?$"
)

MAX_NARINFO_SIZE = 1024 * 1024


class NarInfoError(ValueError):
    """A narinfo that is malformed or does not match what it describes."""


@dataclasses.dataclass(frozen=True)
class NarInfo:
    store_path: str
    url: str
    compression: str
    nar_hash: Hash
    nar_size: int
    file_hash: Hash | None = None
    file_size: int | None = None
    references: tuple[str, ...] = ()
    deriver: str | None = None
    system: str | None = None
    ca: str | None = None
    signatures: tuple[Signature, ...] = ()

    @property
    def base_name(self) -> str:
        return self.store_path.rsplit("/", 1)[-1]

    @property
    def hash_part(self) -> str:
        return hash_part_of(self.base_name)

    def fingerprint(self) -> bytes:
        return fingerprint(self.store_path, str(self.nar_hash), self.nar_size, self.references)

    def with_signatures(self, signatures: Iterable[Signature]) -> NarInfo:
        """This narinfo with ``signatures`` added after its own, duplicates dropped, order kept."""
        merged = list(dict.fromkeys([*self.signatures, *signatures]))
        return dataclasses.replace(self, signatures=tuple(merged))

    def signed(self, key: SecretKey) -> NarInfo:
        """This narinfo carrying a signature by ``key`` (kept as is if it has one by that name)."""
        if any(s.key_name == key.name for s in self.signatures):
            return self
        return self.with_signatures([key.sign(self.fingerprint())])

    def verify_signature(self, key: PublicKey) -> bool:
        """True when one of the signatures is ``key``'s over this narinfo's fingerprint."""
        return any(key.verify(s, self.fingerprint()) for s in self.signatures)

    def unsigned(self) -> NarInfo:
        return dataclasses.replace(self, signatures=())


def parse(text: str) -> NarInfo:
    """Parse and check a narinfo; NarInfoError names the first problem."""
    fields: dict[str, str] = {}
    signatures: list[Signature] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise NarInfoError(f"narinfo line {number} is not 'Key: value'")
        key, value = key.strip(), value.strip()
        if key == "Sig":
            try:
                signatures.append(Signature.parse(value))
            except ValueError as exc:
                raise NarInfoError(f"narinfo Sig: {exc}") from None
        elif key in fields:
            raise NarInfoError(f"narinfo field {key} appears twice")
        else:
            fields[key] = value
    for required in ("StorePath", "URL", "NarHash", "NarSize"):
        if not fields.get(required):
            raise NarInfoError(f"narinfo lacks {required}")
    try:
        base_name_of(fields["StorePath"])
    except ValueError as exc:
        raise NarInfoError(f"narinfo StorePath: {exc}") from None
    compression = fields.get("Compression") or "bzip2"
    if compression not in COMPRESSIONS:
        raise NarInfoError(f"narinfo Compression {compression!r} is not one Nix writes")
    nar_hash = _hash(fields, "NarHash")
    file_hash = _hash(fields, "FileHash") if fields.get("FileHash") else None
    if nar_hash.algorithm != "sha256":
        raise NarInfoError("narinfo NarHash must be sha256")
    nar_size = _size(fields, "NarSize")
    if nar_size == 0:
        raise NarInfoError("narinfo NarSize is 0")
    file_size = _size(fields, "FileSize") if fields.get("FileSize") else None
    references = tuple(fields.get("References", "").split())
    deriver = fields.get("Deriver") or None
    try:
        for reference in references:
            check_base_name(reference)
        if deriver is not None and deriver != "unknown-deriver":
            check_base_name(deriver)
    except ValueError as exc:
        raise NarInfoError(f"narinfo References/Deriver: {exc}") from None
    if deriver == "unknown-deriver":
        deriver = None
    return NarInfo(
        store_path=fields["StorePath"],
        url=fields["URL"],
        compression=compression,
        nar_hash=nar_hash,
        nar_size=nar_size,
        file_hash=file_hash,
        file_size=file_size,
        references=references,
        deriver=deriver,
        system=fields.get("System") or None,
        ca=fields.get("CA") or None,
        signatures=tuple(dict.fromkeys(signatures)),
    )


def _hash(fields: dict[str, str], key: str) -> Hash:
    try:
        return Hash.parse(fields[key])
    except ValueError as exc:
        raise NarInfoError(f"narinfo {key}: {exc}") from None


def _size(fields: dict[str, str], key: str) -> int:
    value = fields[key]
    if not value.isdigit() or len(value) > 19:
        raise NarInfoError(f"narinfo {key} {value!r} is not a size")
    return int(value)


def format(info: NarInfo) -> str:  # noqa: A001 - the module's counterpart of parse
    """The narinfo text, fields in the order Nix writes them, Compression always present."""
    lines = [
        f"StorePath: {info.store_path}",
        f"URL: {info.url}",
        f"Compression: {info.compression}",
    ]
    if info.file_hash is not None:
        lines.append(f"FileHash: {info.file_hash}")
    if info.file_size is not None:
        lines.append(f"FileSize: {info.file_size}")
    lines += [
        f"NarHash: {info.nar_hash}",
        f"NarSize: {info.nar_size}",
        f"References: {' '.join(info.references)}",
    ]
    if info.deriver:
        lines.append(f"Deriver: {info.deriver}")
    if info.system:
        lines.append(f"System: {info.system}")
    lines += [f"Sig: {s}" for s in info.signatures]
    if info.ca:
        lines.append(f"CA: {info.ca}")
    return "\n".join(lines) + "\n"


def cache_info(
    priority: int = 30, public_key: PublicKey | None = None, want_mass_query: bool = True
) -> str:
    """The ``nix-cache-info`` text; a client refuses a cache whose ``StoreDir`` is not its own.

    ``Priority`` orders substituters (lower is tried first); ``WantMassQuery`` lets nix ask for
    many narinfos at once (``nix copy``, ``--dry-run``) rather than one at a time.
    """
    text = f"StoreDir: {STORE_DIR}\nWantMassQuery: {int(want_mass_query)}\nPriority: {priority}\n"
    if public_key is not None:
        text += f"PublicKey: {public_key}\n"
    return text
