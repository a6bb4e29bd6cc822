"""ComfyUI V3 node glue for Imagic (one file per concern)."""
