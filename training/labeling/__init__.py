"""Automatic pixel labeling: gripper-closure region proposals -> Grounding DINO + SAM 2 masks -> prompts.

Produces the Pixel-160K-format (format.py, FORMAT.md) from robot episodes. Command line: ``pixelvla-label``.
"""
