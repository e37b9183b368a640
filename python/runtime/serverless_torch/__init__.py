"""Runtime side of serverless-torch: unpacks compressed dependencies and serves the model."""

__version__ = "0.1.0"
