"""volseg."""
