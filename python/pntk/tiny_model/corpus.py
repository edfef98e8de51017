"""The built-in synthetic corpus: documents with long-range structure.

Sentences follow one pattern, "the ADJ NOUN VERB the NOUN .", so a model must track where it
is in a sentence (attention by relative position). Each document has its own topic: the nouns
come from TOPIC_NOUNS of the NOUNS, drawn with Zipf frequencies (the k-th topic noun with
probability proportional to 1/k), adjectives and verbs from all of theirs. The more of a
document a model has seen, the better it knows the topic, and rare topic nouns keep turning up
for the first time hundreds of tokens in: perplexity keeps falling past the original length,
if the model's RoPE lets it attend that far.
Copy drills (a random span of words, written again and again) teach attention to a fixed
distance far back; they are mixed into training, not into the evaluation documents.
"""
from __future__ import annotations

import numpy as np

# Seeds: the tokenizer's training text, the training stream and the held-out evaluation
# documents (pntk perplexity, pntk demo) draw from their own.
TOKENIZER_SEED = 1
TRAINING_SEED = 2
EVALUATION_SEED = 3

ADJECTIVES = (
    "red blue green small large old young quiet loud bright dark warm cold soft hard quick "
    "slow happy sad brave calm wild gentle proud tired clever lazy busy empty heavy light rich"
).split()
NOUNS = (
    "cat dog bird fish horse mouse lion tiger bear wolf fox owl frog snake rabbit goat "
    "king queen child farmer sailor doctor baker painter singer teacher student hunter "
    "river mountain forest garden castle bridge tower village island desert ocean meadow "
    "apple bread cheese honey lemon onion pepper carrot cake soup stone coin ring lamp "
    "book letter map key door window table chair ship wagon drum bell rope sword shield"
).split()
VERBS = (
    "sees finds likes takes keeps paints follows carries watches moves guards visits "
    "builds breaks hides helps calls meets feeds washes opens closes"
).split()
LEXICON = tuple(ADJECTIVES + NOUNS + VERBS)

TOPIC_NOUNS = 24
TOPIC_PROBABILITIES = 1.0 / np.arange(1, TOPIC_NOUNS + 1)
TOPIC_PROBABILITIES /= TOPIC_PROBABILITIES.sum()


def sentences(rng: np.random.Generator, count: int) -> list[str]:
    """`count` sentences of one document (7 tokens each)."""
    topic = [NOUNS[i] for i in rng.choice(len(NOUNS), size=TOPIC_NOUNS, replace=False)]
    nouns = rng.choice(len(topic), size=(count, 2), p=TOPIC_PROBABILITIES)
    adjectives = rng.integers(len(ADJECTIVES), size=count)
    verbs = rng.integers(len(VERBS), size=count)
    return [
        f"the {ADJECTIVES[a]} {topic[n1]} {VERBS[v]} the {topic[n2]} ."
        for a, (n1, n2), v in zip(adjectives, nouns, verbs)
    ]


def document(rng: np.random.Generator, words: int) -> str:
    """One document of at least `words` words (a word or full stop is one token)."""
    return " ".join(sentences(rng, -(-words // 7)))


def documents(seed: int, count: int, words: int) -> list[str]:
    """`count` documents, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return [document(rng, words) for _ in range(count)]


def copy_drill(rng: np.random.Generator, span_words: int, words: int) -> str:
    """A span of `span_words` random words, repeated to at least `words` words: each word is
    the one `span_words` back, which a small model learns to fetch by relative position."""
    span = " ".join(LEXICON[i] for i in rng.integers(len(LEXICON), size=span_words))
    return " ".join([span] * -(-words // span_words))
