"""Apache Airflow provider for HitPaw's image segmentation (background removal) API.

Kept empty on purpose: DAG files import ``airflow_provider_hitpaw.operators.hitpaw`` on every parse,
and anything imported here would be paid for on each of them.
"""

from __future__ import annotations

__version__ = "0.1.0"
