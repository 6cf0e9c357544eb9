"""Evaluation metrics that training and the audit both use; array code only (backend imports).

    from layerwise.metrics.detection import coco_evaluate        # COCO box AP (pycocotools)
    from layerwise.metrics.segmentation import confusion_matrix, iou_from_confusion
"""

from layerwise.metrics.detection import coco_evaluate
from layerwise.metrics.segmentation import confusion_matrix, iou_from_confusion

__all__ = ["coco_evaluate", "confusion_matrix", "iou_from_confusion"]
