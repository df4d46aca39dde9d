"""The OpenFace analysis service: shared core here; web/, worker/, openface/ and client/ by who runs them."""

__version__ = "0.9.0"
