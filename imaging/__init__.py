"""Pixel and latent tensor operations behind the image, mask and latent nodes.

Conventions of the node protocol, kept here: an IMAGE is a float tensor [B, H, W, C] in 0..1, a MASK
is [B, H, W] (1 = masked), a LATENT is a dict with "samples" [B, C, h, w] and optional "noise_mask"
and "batch_index".
"""
