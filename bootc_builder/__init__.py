"""Build bootc images from multi-stage Containerfiles through the Podman REST API."""

__version__ = "0.1.0"
