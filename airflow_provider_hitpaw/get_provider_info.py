"""The ``apache_airflow_provider`` entry point: what Airflow's providers manager reads about this package.

Airflow 3 builds the ``hitpaw`` connection form from the declarative ``conn-fields`` and
``ui-field-behaviour`` here; Airflow 2.11 asks the hook's classmethods. Both come from one definition in
``_connection_form``, so the two forms cannot drift apart.
"""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    from airflow_provider_hitpaw import __version__
    from airflow_provider_hitpaw._connection_form import connection_type_info

    return {
        "package-name": "airflow-provider-hitpaw",
        "name": "HitPaw",
        "description": "Image segmentation (background removal) with HitPaw's API.",
        "versions": [__version__],
        "connection-types": [connection_type_info()],
        # Airflow 2.11 shows only registered link classes; 3.x resolves them when the task finishes.
        "extra-links": [
            "airflow_provider_hitpaw.links.HitPawCutoutLink",
            "airflow_provider_hitpaw.links.HitPawMaskLink",
            "airflow_provider_hitpaw.links.HitPawOutputFolderLink",
        ],
        "integrations": [
            {
                "integration-name": "HitPaw",
                "external-doc-url": "https://www.hitpaw.com/",
                "tags": ["service"],
            }
        ],
        "operators": [
            {"integration-name": "HitPaw", "python-modules": ["airflow_provider_hitpaw.operators.hitpaw"]}
        ],
        "sensors": [
            {"integration-name": "HitPaw", "python-modules": ["airflow_provider_hitpaw.sensors.hitpaw"]}
        ],
        "hooks": [{"integration-name": "HitPaw", "python-modules": ["airflow_provider_hitpaw.hooks.hitpaw"]}],
        "triggers": [
            {"integration-name": "HitPaw", "python-modules": ["airflow_provider_hitpaw.triggers.hitpaw"]}
        ],
    }
