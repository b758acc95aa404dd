"""What a label image says about the microstructure: per-object tables, ASTM grain size, shape,
scores against references, the classic baselines, overlays, exports and the report's figures."""
