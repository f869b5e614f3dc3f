"""In-process fakes of registries that cannot run here, written from their documented APIs."""
