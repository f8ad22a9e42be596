"""Two CI machines pushing the same store path at once: both ``nix copy`` runs succeed."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import httpx
from depot.core.testing import DepotServer
from depot.nix import narinfo
from depot.nix.signing import SecretKey

from .conftest import Nix  # noqa: TID252

# Eight MiB that compress slowly with xz: both copies ask for the narinfo (missing) long before
# either has compressed and uploaded, so the second narinfo PUT always meets the first one's.
RACE_NIX = """
derivation {
  name = "depot-race-NONCE";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; echo NONCE > $out/id; /bin/dd if=/dev/urandom of=$out/blob bs=1M count=8 2>/dev/null" ];
}
"""


def test_two_concurrent_copies_with_different_compression_both_succeed(
    nix: Nix, nix_depot: DepotServer, signing_key: SecretKey, tmp_path: Path
) -> None:
    expression = tmp_path / "race.nix"
    expression.write_text(RACE_NIX.replace("NONCE", secrets.token_hex(6)))
    path = nix("nix-build", str(expression), "--no-out-link").stdout.strip()
    cache = f"{nix_depot.url}/nix"

    machines = [Nix(tmp_path / f"ci-{compression}") for compression in ("xz", "zstd")]
    copies = [
        subprocess.Popen(
            ["nix", "copy", "--to", f"{cache}?compression={compression}", path],
            env=machine.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for machine, compression in zip(machines, ("xz", "zstd"), strict=True)
    ]
    for copy in copies:
        _, stderr = copy.communicate(timeout=300)
        assert copy.returncode == 0, stderr

    served = narinfo.parse(httpx.get(f"{cache}/{Path(path).name[:32]}.narinfo").text)
    assert served.compression in ("xz", "zstd")
    log = nix_depot.wait_for_log("kept the first upload")
    kept = [json.loads(line) for line in log.splitlines() if "kept the first upload" in line]
    assert [k["kept_url"] for k in kept if k["store_path"] == path] == [served.url]

    # What is served is one whole upload: it substitutes and checks out against its NarHash.
    fresh = tmp_path / "fresh"
    trusted = ["--option", "trusted-public-keys", str(signing_key.public_key())]
    nix("nix", "copy", *trusted, "--from", cache, "--to", str(fresh), path)
    assert (fresh / path.lstrip("/") / "blob").read_bytes() == (Path(path) / "blob").read_bytes()
