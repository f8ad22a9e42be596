"""A Nix binary cache for depot."""
