"""How the ``hitpaw`` connection form looks, written once for both Airflow generations.

Airflow calls ``get_provider_info`` while it loads its configuration, in every process, so this module
imports nothing: the form must not cost a DAG parse the hook's HTTP stack.
"""

from __future__ import annotations

from typing import Any, Final

CONN_TYPE: Final = "hitpaw"
#: The connection every operator, sensor and hook uses unless told otherwise.
DEFAULT_CONN_ID: Final = "hitpaw_default"
HOOK_CLASS: Final = "airflow_provider_hitpaw.hooks.hitpaw.HitPawHook"
HOOK_NAME: Final = "HitPaw"

_HIDDEN_FIELDS: Final = ("schema", "login", "port", "extra")
_RELABELING: Final = {"host": "Base URL", "password": "API key"}
_PLACEHOLDERS: Final = {
    "host": "empty for https://api-base.hitpaw.com, or a full URL such as http://127.0.0.1:8090",
    "password": "your HitPaw API key",
    "ca_bundle": "path of a CA bundle to verify HitPaw's certificate (optional)",
}
#: Extra fields of the form, stored as keys of the connection's extra: name -> (label, JSON type).
EXTRA_FIELDS: Final = {
    "ca_bundle": ("CA bundle path", "string"),
    "allow_insecure_http": ("Allow plain http to a non-loopback host", "boolean"),
    "max_download_bytes": ("Largest result file to download, in bytes (default 256 MiB)", "integer"),
    "download_timeout": ("Seconds one result download may take (default 600)", "number"),
}


def ui_field_behaviour() -> dict[str, Any]:
    """The layout in the form Airflow 2.11 reads from the hook's classmethod."""
    return {
        "hidden_fields": list(_HIDDEN_FIELDS),
        "relabeling": dict(_RELABELING),
        "placeholders": dict(_PLACEHOLDERS),
    }


def connection_type_info() -> dict[str, Any]:
    """The same layout in the declarative form Airflow 3 reads from the provider info."""
    return {
        "hook-class-name": HOOK_CLASS,
        "hook-name": HOOK_NAME,
        "connection-type": CONN_TYPE,
        "ui-field-behaviour": {
            "hidden-fields": list(_HIDDEN_FIELDS),
            "relabeling": dict(_RELABELING),
            "placeholders": dict(_PLACEHOLDERS),
        },
        "conn-fields": {
            name: {"label": label, "schema": {"type": [kind, "null"]}}
            for name, (label, kind) in EXTRA_FIELDS.items()
        },
    }


def form_widgets() -> dict[str, Any]:
    """The extra fields as the Airflow 2.11 webserver's form wants them (wtforms fields).

    Imported here, when called: only the Airflow 2 webserver builds forms, and wtforms is not installed
    elsewhere.
    """
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, StringField

    return {
        name: BooleanField(lazy_gettext(label))
        if kind == "boolean"
        else StringField(lazy_gettext(label), widget=BS3TextFieldWidget())
        for name, (label, kind) in EXTRA_FIELDS.items()
    }
