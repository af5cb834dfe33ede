"""Pixels: probing and decoding image bytes, and the transforms models need."""
