"""ConfigurableResource classes for every external system; `defs/resources.py` binds them per deployment."""
