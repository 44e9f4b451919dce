"""avzsl.extractors: everything that turns raw inputs into stored artefacts.

Videos -> per-second audio/visual features (``feature_store``), class names -> text embeddings
(``text_store``), and the dataset sources that produce the videos (``sources``).
"""
