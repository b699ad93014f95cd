"""What spans sources: keeping the tenant partition dimension equal to the tenant registry."""
