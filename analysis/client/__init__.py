"""A client of the service and its storage, and the command line on top of it (``bin/analyse``)."""
