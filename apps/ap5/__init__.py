"""AP5: statistical downscaling of 2 m temperature (JSC), a PyTorch U-Net or Wasserstein GAN."""
