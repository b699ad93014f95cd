"""What spans sources: the tenant partition dimension kept equal to the registry, and failed runs recorded."""
