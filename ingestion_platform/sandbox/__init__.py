"""Local stand-ins that speak the real protocols, so the same clients run with no cloud account."""
