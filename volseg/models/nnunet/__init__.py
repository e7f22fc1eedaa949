"""nnU-Net v2 model folders (see volseg.models.nnunet.model)."""
