"""Sparse autoencoders (torch extra)."""
