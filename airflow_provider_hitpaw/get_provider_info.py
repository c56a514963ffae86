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
            "airflow_provider_hitpaw.links.HitPawContactSheetLink",
        ],
        "config": {
            "hitpaw": {
                "description": "HitPaw provider settings that hold for every HitPaw task of a deployment.",
                "options": {
                    "min_deferred_seconds": {
                        "description": (
                            "Seconds a deferred HitPaw task waits at least before its trigger fires, "
                            "however fast the job. On Airflow 3 a trigger event within seconds of the "
                            "deferral can fail the resumed try (apache/airflow#66374); 0 turns the hold "
                            "off. A task's own min_deferred_seconds wins over this."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "10",
                        "default": "10",
                    }
                },
            }
        },
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
