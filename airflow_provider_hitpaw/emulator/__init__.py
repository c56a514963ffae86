"""A local stand-in for HitPaw's API, for tests and demos that must not spend coins.

Run it with ``hitpaw-emulator`` (see :mod:`.__main__`), in a thread with :class:`.runner.EmulatorServer`,
or through the pytest fixture ``hitpaw_emulator`` (:mod:`.pytest_plugin`). The modules, one concern each:

* :mod:`.state`: the account's data (coins, keys, jobs, uploads) and the rules that change it;
* :mod:`.api`: HitPaw's segmentation endpoints and result files; :mod:`.oss`: the pre-signed upload;
* :mod:`.fetch`: how a job's image is fetched; :mod:`.imaging`: the segmentation and the sample images;
* :mod:`.faults`: the fault rules; :mod:`.middleware`: request counting and fault injection;
* :mod:`.hostile`: the answers of a hostile server (redirects, bounded endless bodies, gzip bombs, drips);
* :mod:`.control`: the ``/_emulator/*`` endpoint that steers it, for loopback callers with the run's token;
* :mod:`.startup`: the CLI's start-up line (address, control token) and its parser;
* :mod:`.loopback`: what counts as this machine;
* :mod:`.app`: the :class:`~.app.Emulator` that wires these together and owns the listeners;
* :mod:`.runner`: :class:`~.runner.EmulatorServer`, the emulator in a background thread;
* :mod:`.server`: every public name re-exported from the place it always had.

Each module states the choices it makes where HitPaw's documentation is silent.

The emulator writes down HitPaw's paths, field names and error codes itself, on purpose, rather than
importing them from the provider's ``_api.py``: it is an independent check of the provider's reading of the
documentation, so the two must not share those constants. It imports nothing from the provider at all, and
the provider never imports it. Importing this package is cheap (it imports nothing); aiohttp, numpy and
Pillow load only with the modules that need them.
"""
