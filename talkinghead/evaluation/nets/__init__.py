"""The field's metric networks, as architectures whose weights the user supplies.

SyncNet (LSE-C/D), ArcFace IResNet (CSIM), Inception-v3 (FID), I3D (FVD) and LPIPS. None of
their weights can be had offline here, so each module holds the real architecture with the key
names of the public weight files, and `load_state_dict_file` reads those files safely.
"""
