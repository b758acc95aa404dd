"""Serial-section stacks: reading and exporting them, linking 2D slices into 3D objects, and the
3D measurements."""
