"""Headless use of the Imagic nodes through ComfyUI's own executor."""
