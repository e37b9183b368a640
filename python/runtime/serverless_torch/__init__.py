"""Runtime side of serverless-torch: unpacks compressed dependencies and serves the model."""
