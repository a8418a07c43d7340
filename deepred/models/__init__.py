"""Networks: timm backbones, neural baselines, the redshift heads, the registry and checkpoints."""
