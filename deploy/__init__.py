"""Getting searches onto clusters and running the services (Ray Jobs, MLflow server, manifests)."""
