"""The store path page of the Nix cache: ``/-/browse/nix/<hash part>``.

What a person checks before substituting a path: the store path, its NAR size and compressed
size, references and referrers (linked when this cache holds them), the closure's size, each
signature and whether it verifies against depot's own key, the deriver, and the ``nix copy
--from`` / ``nix-store -r`` lines. Everything comes from the narinfo rows and their references.

Where it came from: a path pushed here (``nix copy --to``) is marked pushed; one fetched from a
``--nix-upstream`` says which and when, and whether its NAR is held yet (a narinfo is fetched on
the first lookup, its NAR on the first download). References, referrers and the closure count
both kinds, as the cache serves both.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from depot.core import EcosystemContext
from depot.core.database import contains
from depot.core.markup import Markup, code, escape, link, table
from depot.core.packagepages import (
    CACHED,
    PUSHED,
    PackagePage,
    PageSection,
    Provenance,
    provenance_label,
)
from depot.core.pages import human_size
from depot.nix import narinfo, store, tables
from depot.nix.keys import Signer
from depot.nix.narinfo import NarInfo
from depot.nix.storepath import HASH_PART_LENGTH, STORE_DIR, is_hash_part
from starlette.requests import Request

#: Hash parts asked for in one ``IN (...)`` while walking a closure.
_BATCH = 500


@dataclass(frozen=True)
class Closure:
    """The transitive references of a path as far as this cache holds them."""

    paths: int
    nar_size: int
    missing: int  # referenced paths this cache does not hold


class NixPages:
    """Builds ``/-/browse/nix/<hash part>`` from the narinfo rows."""

    #: Every write of this ecosystem notifies ctx.changes: the core may keep rendered pages.
    follows_changes = True

    def __init__(self, ctx: EcosystemContext) -> None:
        self.ctx = ctx
        self.ecosystem = ctx.name
        self.signer = Signer(ctx.settings.private_key)

    async def page(self, name: str, request: Request) -> PackagePage | None:
        hash_part = _hash_part(name)
        if hash_part is None:
            return None
        found = await store.get_narinfo(self.ctx.db, hash_part)
        nar_note = ""
        if found is not None:
            info, provenance = found[0], _PUSHED
        else:
            # Pushed paths win over cached ones, as when serving the narinfo.
            cached = await self.ctx.db.fetch_one(
                sa.select(tables.upstream_narinfos).where(
                    tables.upstream_narinfos.c.hash_part == hash_part
                )
            )
            if cached is None:
                return None
            info = narinfo.parse(cached["narinfo"])
            provenance = Provenance(CACHED, cached["upstream_url"], cached["fetched_at"])
            nar_note = (
                "fetched and verified"
                if cached["nar_key"] is not None
                else "not fetched yet: the first nix copy or substitution fetches it"
            )
        references = sorted(set(info.references))
        deriver_hash = (info.deriver or "")[:HASH_PART_LENGTH]
        held = await self._store_paths([*(r[:HASH_PART_LENGTH] for r in references), deriver_hash])
        referrers = await self._referrers(info.base_name)
        closure = await self._closure(info)

        cache = self.ctx.external_url(request)
        facts: list[tuple[str, object]] = [
            ("NarHash", code(str(info.nar_hash))),
            ("NarSize", f"{human_size(info.nar_size)} ({info.nar_size} bytes)"),
            ("compressed", f"{human_size(info.file_size)} ({info.compression})"),
            ("closure", _closure_fact(closure)),
            ("deriver", self._deriver(info, deriver_hash in held, request)),
            ("System", info.system or ""),
            ("CA", info.ca or ""),
            ("narinfo", link(f"{cache}/{hash_part}.narinfo", f"{hash_part}.narinfo")),
            ("source", provenance_label(provenance)),
            ("NAR", nar_note),
        ]
        sections = [
            PageSection("Signatures", self._signatures(info), "signatures"),
            PageSection(
                f"References ({len(references)})",
                self._paths_table(references, held, request, own=info.base_name),
                "references",
            ),
            PageSection(
                f"Referrers ({len(referrers)})",
                self._paths_table(referrers, {r[:HASH_PART_LENGTH] for r in referrers}, request),
                "referrers",
            ),
        ]
        return PackagePage(
            title=info.store_path,
            summary="Nix store path",
            install=(
                ("copy from this cache", f"nix copy --from '{cache}' {info.store_path}"),
                (
                    "or realise it with this cache as a substituter",
                    f"nix-store -r {info.store_path} --option substituters '{cache}'",
                ),
            ),
            facts=facts,
            sections=sections,
            provenance=provenance,
        )

    def _signatures(self, info: NarInfo) -> Markup:
        """Each stored signature and whether it is depot's own key's, valid over this path."""
        key = self.signer.key
        public = key.public_key() if key is not None else None
        fingerprint = info.fingerprint()
        rows = []
        for signature in info.signatures:
            if public is None:
                verdict = "depot has no key (--private-key) to check it with"
            elif signature.key_name != public.name:
                verdict = f"another key than depot's ({public.name})"
            elif public.verify(signature, fingerprint):
                verdict = "verifies against depot's key"
            else:
                verdict = "does NOT verify against depot's key"
            rows.append((signature.key_name, code(str(signature)), verdict))
        parts = [table(("key", "signature", "against depot's key"), rows) if rows else Markup()]
        if public is not None:
            served = info.signed(key) if key is not None else info
            ok = any(public.verify(s, fingerprint) for s in served.signatures)
            parts.append(
                Markup("<p>Served with a signature by depot's key <code>{}</code>: {}.</p>").format(
                    public, "verifies" if ok else "does NOT verify"
                )
            )
        elif not rows:
            parts.append(Markup("<p>None: this path is served unsigned.</p>"))
        return escape("").join(parts)

    def _deriver(self, info: NarInfo, held: bool, request: Request) -> Markup | str:
        """The derivation that built the path; linked when this cache holds the .drv too."""
        if not info.deriver:
            return ""
        url = self.ctx.page_url(request, info.deriver[:HASH_PART_LENGTH]) if held else None
        return link(url, f"{STORE_DIR}/{info.deriver}")

    def _paths_table(
        self,
        base_names: Sequence[str],
        held: Container[str],
        request: Request,
        own: str | None = None,
    ) -> Markup:
        """Store paths, each linked to its page when ``held`` (hash parts) has it."""
        if not base_names:
            return Markup("<p>None.</p>")
        pages = self.ctx.page_url(request, "")  # + hash part: built once for a thousand rows
        cached = held.cached if isinstance(held, HeldPaths) else set()

        def held_note(hash_part: str) -> Markup | str:
            return provenance_label(_CACHED_HERE) if hash_part in cached else ""

        rows = []
        for base in base_names:
            hash_part = base[:HASH_PART_LENGTH]
            url = pages + hash_part if hash_part in held else None
            note = (
                "itself" if base == own
                else held_note(hash_part) if hash_part in held
                else "not in this cache"
            )  # fmt: skip
            rows.append((link(url, f"{STORE_DIR}/{base}"), note))
        return table(("store path", ""), rows)

    async def _store_paths(self, hash_parts: Iterable[str]) -> HeldPaths:
        """{hash part: store path} of those this cache holds, pushed or cached from an
        upstream (``.cached`` names the latter)."""
        wanted = sorted(set(hash_parts))
        found = HeldPaths()
        n, u = tables.narinfos, tables.upstream_narinfos
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            query = sa.select(n.c.hash_part, n.c.store_path).where(n.c.hash_part.in_(batch))
            found.update((r[0], r[1]) for r in await self.ctx.db.fetch_all(query))
            rest = [h for h in batch if h not in found]
            if rest:
                query = sa.select(u.c.hash_part, u.c.narinfo).where(u.c.hash_part.in_(rest))
                for row in await self.ctx.db.fetch_all(query):
                    found[row[0]] = _field(row[1], "StorePath")
                    found.cached.add(row[0])
        return found

    async def _referrers(self, base_name: str) -> list[str]:
        """Base names of the held paths whose References name ``base_name`` (itself excluded).

        References are stored as a space-separated text; a LIKE on the hash part narrows the
        rows, and the split confirms each one.
        """
        n = tables.narinfos
        query = sa.select(n.c.store_path, n.c.references).where(
            contains(n.c.references, base_name[:HASH_PART_LENGTH])
        )
        rows = [tuple(r._mapping) for r in await self.ctx.db.fetch_all(query)]
        u = tables.upstream_narinfos
        cached = sa.select(u.c.narinfo).where(contains(u.c.narinfo, base_name))
        rows += [
            (_field(r[0], "StorePath"), _field(r[0], "References"))
            for r in await self.ctx.db.fetch_all(cached)
        ]
        found = set()
        for row in rows:
            referrer = row[0].rsplit("/", 1)[-1]
            if referrer != base_name and base_name in row[1].split():
                found.add(referrer)
        return sorted(found)

    async def _closure(self, info: NarInfo) -> Closure:
        """Walk the references breadth first, one query per batch of hash parts."""
        seen = {info.hash_part}
        size, missing = info.nar_size, 0
        frontier = {r[:HASH_PART_LENGTH] for r in info.references} - seen
        n = tables.narinfos
        while frontier:
            seen |= frontier
            wanted = sorted(frontier)
            frontier = set()
            for start in range(0, len(wanted), _BATCH):
                batch = wanted[start : start + _BATCH]
                query = sa.select(n.c.hash_part, n.c.nar_size, n.c.references).where(
                    n.c.hash_part.in_(batch)
                )
                rows = [tuple(r._mapping) for r in await self.ctx.db.fetch_all(query)]
                rest = sorted(set(batch) - {r[0] for r in rows})
                if rest:
                    u = tables.upstream_narinfos
                    query = sa.select(u.c.hash_part, u.c.narinfo).where(u.c.hash_part.in_(rest))
                    rows += [
                        (r[0], int(_field(r[1], "NarSize") or 0), _field(r[1], "References"))
                        for r in await self.ctx.db.fetch_all(query)
                    ]
                missing += len(batch) - len(rows)
                for row in rows:
                    size += int(row[1])
                    frontier |= {r[:HASH_PART_LENGTH] for r in row[2].split()}
            frontier -= seen
        return Closure(paths=len(seen) - missing, nar_size=size, missing=missing)


class HeldPaths(dict[str, str]):
    """{hash part: store path} held, and which of them are cached from an upstream."""

    def __init__(self) -> None:
        super().__init__()
        self.cached: set[str] = set()


#: The provenance of pushed paths (``nix copy --to``, ``depot nix push``) and the label of a
#: cached path listed on another path's page (its own page says from where and when).
_PUSHED = Provenance(PUSHED)
_CACHED_HERE = Provenance(CACHED, "an upstream")


def _field(text: str, name: str) -> str:
    """One field of a narinfo's text (a cached narinfo is kept as the upstream signed it)."""
    prefix = name + ": "
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :]
    return ""


def _hash_part(name: str) -> str | None:
    """The hash part in ``<hash>``, ``<hash>-<name>`` or a whole store path."""
    base = name.rsplit("/", 1)[-1]
    hash_part = base[:HASH_PART_LENGTH]
    return hash_part if is_hash_part(hash_part) else None


def _closure_fact(closure: Closure) -> str:
    text = f"{closure.paths} path(s), {human_size(closure.nar_size)} unpacked"
    if closure.missing:
        text += f"; {closure.missing} referenced path(s) not in this cache"
    return text
