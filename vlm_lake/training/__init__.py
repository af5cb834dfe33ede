"""What trainers read: the training JSON export and the PyTorch ``VLMDataset``."""
