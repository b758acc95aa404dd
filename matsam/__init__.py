"""matsam: training-free segmentation of material micrographs with Segment Anything.

The package holds all the logic of the pipeline as small modules of pure functions on arrays
(`prompts`, `nms`, `merge`, `quantify`, `metrics`, `baselines`, ...); only `matsam.segmentation.sam` touches
torch, and only `matsam.io` (plus the CLI and the workflow scripts) touches files.
"""

__version__ = "0.1.0"
