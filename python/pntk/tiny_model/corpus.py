"""The built-in synthetic corpus: documents whose later lines repeat earlier ones.

The language: LEXICON_SIZE made-up two-syllable words ("bamo", "tike", ...). A line is 5 to 12
random words and a full stop. Line j of a document is new with probability w / (j + w),
otherwise an exact copy of one earlier distinct line chosen uniformly, so usually far back (a
Chinese restaurant process without the rich-get-richer pick). Once its first word is seen, a
repeated line is predictable only by looking back to its first occurrence; a new word costs
ln(LEXICON_SIZE) nats. So the more of a document a model can use, the lower its perplexity,
and a model whose RoPE breaks beyond some position loses that gain. A two-layer model copies
by an induction circuit (attend to what followed the last occurrence of the current word).
Copy drills (a random span of words, repeated) teach a small model to copy at all.
"""
from __future__ import annotations

import numpy as np

# Seeds: the lexicon, the tokenizer's training text and the training stream draw from their
# own; held-out evaluation documents (pntk perplexity, pntk demo) from EVALUATION_SEED.
LEXICON_SEED = 0
TOKENIZER_SEED = 1
TRAINING_SEED = 2
EVALUATION_SEED = 3

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
LEXICON_SIZE = 256
LINE_WORDS = (5, 12)
NEW_LINE_WEIGHT = 12.0


def _lexicon() -> tuple[str, ...]:
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    words = [a + b for a in syllables for b in syllables]
    chosen = np.random.default_rng(LEXICON_SEED).choice(len(words), size=LEXICON_SIZE, replace=False)
    return tuple(words[i] for i in sorted(chosen))


LEXICON = _lexicon()


def random_words(rng: np.random.Generator, count: int) -> str:
    return " ".join(LEXICON[i] for i in rng.integers(len(LEXICON), size=count))


def lines(rng: np.random.Generator, words: int, new_line_weight: float = NEW_LINE_WEIGHT) -> list[str]:
    """The lines of one document of at least `words` words (about 1.1 tokens each)."""
    distinct: list[str] = []
    stream: list[str] = []
    count = 0
    while count < words:
        if rng.random() < new_line_weight / (len(stream) + new_line_weight):
            low, high = LINE_WORDS
            distinct.append(random_words(rng, int(rng.integers(low, high + 1))) + " .")
            stream.append(distinct[-1])
        else:
            stream.append(distinct[rng.integers(len(distinct))])
        count += stream[-1].count(" ")
    return stream


def document(rng: np.random.Generator, words: int) -> str:
    """One document of at least `words` words."""
    return " ".join(lines(rng, words))


def documents(seed: int, count: int, words: int) -> list[str]:
    """`count` documents, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return [document(rng, words) for _ in range(count)]


def copy_drill(rng: np.random.Generator, span_words: int, words: int) -> str:
    """A span of `span_words` random words, repeated to at least `words` words (teaches copying)."""
    span = random_words(rng, span_words)
    return " ".join([span] * -(-words // span_words))
