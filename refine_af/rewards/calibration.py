"""What every model scorer shares: the task as a reader sees it, loading, the squash into (0, 1), the calibration set.

Each model scorer has a raw value x per instance (nats, a logit or a probability) and the term's value is its squash:

    value = sigma((x - center) / scale)          (x is the log-odds log(p / (1 - p)) for the probability scorers)

so no term sits at a bound where its gradient signal is gone. center and scale are the scorer's defaults
(`refine_af.rewards.registry.SCORERS`) unless the config gives them (`rl.reward.<term>.center`, `.scale`): documented
constants, or calibrated. A calibrated scorer's center and scale are the mean and standard deviation of x over a
fixed calibration set (`calibration_set()`: 12 reference instances, each also with its output's words shuffled,
with another task's output, and with the output cut to its first half -- 48 instances of graded quality), scored
once when the scorer loads. A fixed set, not the first training batch, so the squash is the same in every run,
every resumed run and the probe, and is a property of the scoring model alone. A centre tuned for one scorer puts
another's values at one end: OpenAssistant's logits landed at 0.92..0.99 under the CPU stand-in's centre -2.5, and
UniEval's probabilities of fluent text crowd near 1. The centre and scale used are in the manifest
(`provenance.reward`), and the rl probe records each term's spread (`probe.terms_spread`: mean, std, min, p10, p90,
max) to check that the values stay inside (0, 1).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def join_prompt(instruction: str, input: str = "") -> str:
    """The task as a reader sees it: the instruction, then the input when there is one."""
    return f"{instruction}\n\n{input}" if input.strip() else instruction


def pretrained(auto: str, path: str, device: str) -> tuple[Any, Any]:
    """(tokenizer, model) of a local model directory: the model through transformers' `auto` class (by name, so
    transformers is imported only when a model loads), in eval mode on `device`."""
    import transformers

    from refine_af.models import pick_device

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return tokenizer, getattr(transformers, auto).from_pretrained(path).to(pick_device(device)).eval()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)  # a float softmax can give exactly 0 or 1
    return math.log(p / (1 - p))


CALIBRATION_EXAMPLES = [  # (instruction, input, a good output): varied tasks, with and without an input
    ("Translate the sentence into French.", "Good morning, how are you?", "Bonjour, comment allez-vous ?"),
    ("Give three tips for staying healthy.", "",
     "Eat a balanced diet with plenty of vegetables, exercise regularly, and get enough sleep every night."),
    ("What is the capital of France?", "", "The capital of France is Paris."),
    ("Summarize the paragraph in one sentence.",
     ("The city council voted on Tuesday to expand the public library, adding a new wing for children and "
      "extending opening hours on weekends."),
     "The city council approved expanding the library with a children's wing and longer weekend hours."),
    ("Classify the sentiment of the review as positive or negative.",
     "I loved this movie, the acting was wonderful and the story kept me hooked.",
     "The sentiment of the review is positive."),
    ("Write a short poem about the ocean.", "",
     "The ocean waves roll in and out, whispering secrets to the sandy shore beneath the silver moon."),
    ("Convert the temperature from Celsius to Fahrenheit.", "25 degrees Celsius",
     "25 degrees Celsius is 77 degrees Fahrenheit."),
    ("Explain why the sky is blue.", "",
     "The sky looks blue because air molecules scatter short blue wavelengths of sunlight more than red ones."),
    ("List the first five prime numbers.", "", "The first five prime numbers are 2, 3, 5, 7, and 11."),
    ("Correct the grammar in the sentence.", "She go to school every days.", "She goes to school every day."),
    ("Suggest a name for a new coffee shop.", "", "A good name for a new coffee shop would be The Daily Grind."),
    ("Describe the main function of the heart.", "",
     "The heart pumps blood through the body, delivering oxygen and nutrients to the organs."),
]


def calibration_set() -> tuple[list[str], list[str], list[str]]:
    """(instructions, inputs, outputs) of the 48 calibration instances: each example as written, with its output's
    words shuffled (seeded), with another example's output, and with its output cut to its first half.

    Graded quality, so the spread of a scorer's values on it is the spread between good and poor instances; empty
    outputs are left out (an unparseable completion is an extreme, not part of the range a term should resolve).
    """
    import random

    rng = random.Random(0)
    instr = [e[0] for e in CALIBRATION_EXAMPLES]
    inputs = [e[1] for e in CALIBRATION_EXAMPLES]
    good = [e[2] for e in CALIBRATION_EXAMPLES]
    shuffled = []
    for text in good:
        words = text.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    half = len(good) // 2
    off_topic = good[half:] + good[:half]
    cut = [" ".join(text.split()[: max(1, len(text.split()) // 2)]) for text in good]
    return instr * 4, inputs * 4, good + shuffled + off_topic + cut


class Squashed:
    """A model scorer: `raw()` gives its natural value x per instance (nan: nothing to score), `__call__` the
    term's value sigma((x' - center) / scale) with x' = x, or log(x / (1 - x)) for a probability (`log_odds`).

    center / scale None: calibrated, the mean / standard deviation of x' over `calibration_set()`, computed once
    (`calibrate()`, on the first call or at `CompositeReward.load()`) and kept when pickled.
    """

    center: float | None
    scale: float | None
    empty = 0.0  # the value of an instance with nothing to score (an empty output)
    log_odds = False

    def raw(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def _x(self, value: float) -> float:
        return _log_odds(value) if self.log_odds else value

    @property
    def calibrated(self) -> bool:
        """Whether center or scale comes from the calibration set."""
        return getattr(self, "_calibrated", False) or self.center is None or self.scale is None

    def calibrate(self) -> Squashed:
        if self.center is None or self.scale is None:
            xs = [self._x(v) for v in self.raw(*calibration_set()) if not math.isnan(v)]
            if self.center is None:
                self.center = statistics.fmean(xs)
            if self.scale is None:
                self.scale = statistics.pstdev(xs) or 1.0  # a constant scorer: any scale maps it to 0.5
            self._calibrated = True
        return self

    def __call__(self, instructions: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
                 **kwargs: Any) -> list[float]:
        self.calibrate()
        return [self.empty if math.isnan(v) else _sigmoid((self._x(v) - self.center) / self.scale)
                for v in self.raw(instructions, inputs, outputs)]

