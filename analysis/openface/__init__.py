"""OpenFace as the worker drives it: its executables or resident engines, in a sandbox, and what they write.

The runner (executables) and the engine pool have one ``run`` signature, so
a batch runs its media through either. ``results`` reads and classifies what
OpenFace left; ``interpret``, ``summary``, ``plot`` and ``outputs`` turn it
into what is published.
"""
