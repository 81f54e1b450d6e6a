"""What a compiled loss needs at run time, written so an emitted file can copy it: kernels, connectors, attach."""
