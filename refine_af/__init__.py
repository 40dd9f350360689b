"""refine-af: REFINE-AF (arXiv 2505.06548) on Kubernetes.

Instruction data from a small open LLM, improved with reinforcement learning from automated feedback,
fine-tuned on and evaluated on Super-NaturalInstructions. See README.md and DESIGN.md.
"""

__version__ = "0.1.0"
