"""The method math in pure PyTorch / numpy: no Detectron2 import anywhere below this folder, so
the semantic-segmentation heads and the ROI heads call the same code."""
