"""From a micrograph to object masks: crops, point prompts, SAM's encoder and decoder, NMS, and
the merge of the masks into one label image."""
