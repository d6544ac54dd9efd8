"""Training and fine-tuning: settings, losses, augmentation, batches, the loop, and what
ends a run (calibration, the size model, the report).
"""
