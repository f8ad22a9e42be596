"""Verification of an uploaded NAR file against the narinfo that names it.

The stored file is streamed through its decompressor into the NAR validator, chunk by chunk in a
worker thread, so a NAR of any size is checked in flat memory; the ``.ls`` listing the validator
writes streams into its own blob, committed only when everything matched.
"""

from __future__ import annotations

import asyncio

from depot.core.blobs import ScopedBlobStore
from depot.nix.compression import CompressionError, decompressor
from depot.nix.nar import NarError, NarValidator
from depot.nix.narinfo import NarInfo


class VerificationError(ValueError):
    """The NAR file does not match its narinfo; the message says how."""


async def verify_nar(blobs: ScopedBlobStore, nar_key: str, info: NarInfo, listing_key: str) -> None:
    """Check that ``nar_key`` decompresses to a valid NAR of NarSize bytes hashing to NarHash.

    On success the listing is committed under ``listing_key``; on failure nothing is written
    and :class:`VerificationError` says why.
    """
    parts: list[str] = []
    validator = NarValidator(parts.append)

    def into_validator(data: bytes) -> None:
        validator.feed(data)
        if validator.size > info.nar_size:
            raise VerificationError(f"NAR is larger than NarSize {info.nar_size}")

    unpack = decompressor(info.compression, into_validator)
    async with blobs.upload(listing_key) as listing:
        try:
            async for chunk in blobs.read(nar_key):
                await asyncio.to_thread(unpack.feed, chunk)
                if parts:
                    await listing.write("".join(parts).encode())
                    parts.clear()
            await asyncio.to_thread(unpack.finish)
            validator.finish()
        except (NarError, CompressionError) as exc:
            raise VerificationError(f"{info.url}: {exc}") from None
        if validator.size != info.nar_size:
            raise VerificationError(
                f"NAR has {validator.size} bytes, narinfo NarSize says {info.nar_size}"
            )
        if validator.sha256.digest() != info.nar_hash.digest:
            raise VerificationError("NAR does not hash to the narinfo's NarHash")
        await listing.write("".join(parts).encode())
        await listing.complete()
        await listing.commit()
