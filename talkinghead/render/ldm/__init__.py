"""Latent diffusion renderers on one foundation (issue #18).

- `autoencoder.py`: the latent autoencoder, diffusers' `AutoencoderKL` either loaded from a
  user's local Stable Diffusion VAE folder (diffusers format) or built small and trained here;
- `unet.py`: the conditional denoiser from diffusers' blocks (`UNet2DConditionModel`), the
  decoupled second cross-attention, prediction -> x0 for our samplers (talkinghead/diffusion/);
- `renderer.py`: what both renderers share (portrait crop, audio features, chunked sampling,
  decoding, paste-back);
- `difftalk.py`: DiffTalk (Shen et al., CVPR 2023; ../shared/papers/difftalk.txt);
- `fd2talk_render.py`: FD2Talk's frame-generation stage (fd2talk.txt, Sec. 3.3).
"""
