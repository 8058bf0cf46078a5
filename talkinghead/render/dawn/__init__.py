"""DAWN (dawn.txt) as released: the Latent Flow Generator (lfg_mraa.py) and the audio-to-video flow
diffusion model (unet3d.py) that generates the LFG's motion latents for a whole clip in one pass,
run in time and memory linear in its length (linear.py); the authors' files (official.py)."""
