"""Model families: one folder per family (network, preparation, pre/post-processing, kind check,
plugin classes and its `Family` registration in `family.py`)."""
