"""Data: corpus synthesis and preparation, manifests, datasets and samplers."""
