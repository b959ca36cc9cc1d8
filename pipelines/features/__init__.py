"""The features stage: point-in-time snapshot grid, labels and features (one code path for training and scoring)."""
