"""An npm registry for depot."""
