"""AP6: wind power production (4cast): weather regimes (scikit-learn) and a per-turbine PyTorch forecast."""
