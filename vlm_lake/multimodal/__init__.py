"""The join: documents and their images -> ``multimodal_lance``, image bytes never shuffled."""
