"""Where vectors come from: words, texts embedded by a model, or a file of vectors; the cache and the DataModule."""
