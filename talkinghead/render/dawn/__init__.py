"""DAWN (dawn.txt): a Latent Flow Generator (lfg.py) and an audio-to-video flow diffusion model
(a2v_fdm.py) that generates the LFG's motion latents for a whole clip in one pass."""
