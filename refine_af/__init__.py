"""refine-af: REFINE-AF (arXiv 2505.06548) on Kubernetes.

Instruction data from a small open LLM, improved with reinforcement learning from automated feedback,
fine-tuned on and evaluated on Super-NaturalInstructions. See README.md.
"""

from importlib.metadata import version

__version__ = version("refine-af")  # pyproject.toml's, from the installed distribution: no second copy to keep
