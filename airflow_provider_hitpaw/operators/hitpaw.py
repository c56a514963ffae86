"""The operators that submit images to HitPaw's segmentation, importable from one place.

``SegmentImageOperator`` (one image) lives in :mod:`.segment_image`, ``SegmentImageBatchOperator``
(thousands in one task) in :mod:`.segment_image_batch`. DAG files import this module on every parse: it
imports neither HTTP clients nor the hooks.
"""

from __future__ import annotations

from airflow_provider_hitpaw.operators.segment_image import SegmentImageOperator
from airflow_provider_hitpaw.operators.segment_image_batch import SegmentImageBatchOperator

__all__ = ["SegmentImageBatchOperator", "SegmentImageOperator"]
