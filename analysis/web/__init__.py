"""The web process (gunicorn ``app:app``): check a request, record the job, queue it; nothing more.

The worker does the analysis; nothing here imports OpenFace's runner or the
worker (tests/test_layout.py holds it to that).
"""
