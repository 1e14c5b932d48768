"""Models + sampling + model management, combined into what nodes pass around and do.

- `objects`: MODEL (`DiffusionModel`), CLIP (`TextEncoders`), VAE (`Autoencoder`) handles;
- `loading`: checkpoint / VAE / UNet / text-encoder files -> handles, cached per ModelManager;
- `conditioning`: CONDITIONING lists (text encoding, areas, masks, timestep ranges, averaging);
- `ksampler`: sampling with progress, previews and interruption; the custom-sampler objects;
- `vae_ops`: IMAGE <-> LATENT, tiled, inpainting preparations;
- `previews`: latent -> RGB step previews (TAESD or linear);
- `saving`: CheckpointSave.
Nothing runs at import.
"""
