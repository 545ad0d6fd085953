"""How well a candidate keeps the similarities: pair statistics, neighbours, recall, and the study's charts."""
