"""AP4: post-processing of ENS-10 ensemble forecasts (mean and spread) with an MLP or a U-Net."""
