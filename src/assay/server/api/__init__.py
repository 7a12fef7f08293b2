"""Routes by resource; ``assay.server.app`` mounts them under every API prefix."""
