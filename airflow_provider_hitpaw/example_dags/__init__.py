"""Example DAGs of the HitPaw provider, shipped in the package: point a DAGs folder here, or run one with
``hitpaw-demo`` (``python -m airflow_provider_hitpaw.demo``) against the local emulator.

* ``example_hitpaw_one_task``: one image, submitted and waited for in the triggerer;
* ``example_hitpaw_two_step``: submit in one task, wait in a sensor;
* ``example_hitpaw_mapped``: dynamic task mapping over a list, results kept, cost reported;
* ``example_hitpaw_folder``: every image of a folder (any storage) into another folder;
* ``example_hitpaw_batch``: a thousand images in one task and one trigger.
"""
