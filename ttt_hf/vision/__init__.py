"""TTT-ViT image classifiers: data path, transforms, recipes, model sizing, training, evaluation."""
