"""A local stand-in for HitPaw's API, for tests and demos that must not spend coins (README: "The local
emulator").

Run it with ``hitpaw-emulator`` (:mod:`.__main__`), in a thread with :class:`.runner.EmulatorServer`, or
through the pytest fixture ``hitpaw_emulator`` (:mod:`.pytest_plugin`). Each module holds one concern and
states the choices it makes where HitPaw's documentation is silent; :mod:`.app` wires them together.

It writes down HitPaw's paths, field names and error codes itself rather than importing the provider's
``_api.py``: it is an independent check of the provider's reading of the documentation, so the two must
not share those constants. The provider's hooks, operators and triggers never import it. Importing this
package is cheap; aiohttp, numpy and Pillow load only with the modules that need them.
"""
