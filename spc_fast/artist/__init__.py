"""The Photographic Artist: the Qwen-Image-Edit DiT, its VAE and the flow-matching sampler."""
