"""The trainer of every network (timm's train.py layout), its data loader and its resume checkpoint."""
