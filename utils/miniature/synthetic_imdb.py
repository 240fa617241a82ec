"""A tiny aclImdb tree (for the tests and the GPU check): reviews of growing length with the
original's HTML line breaks, file names ``<id>_<rating>.txt``, an ``unsup/`` folder and the top files."""

from pathlib import Path

POSITIVE = ["the movie was great", "a good film", "great great film", "it was good"]
NEGATIVE = ["the movie was bad", "a bad film", "not good", "it was not great"]
REVIEWS_PER_CLASS = 6


def review_text(phrases, number):
    """A review of a length that grows with ``number``, with the tree's HTML line breaks."""
    sentences = [phrases[(number + k) % len(phrases)] for k in range(1 + 3 * number)]
    return "<br /><br />".join(sentences)


def write_acl_imdb(root):
    """An aclImdb-shaped tree: train|test/pos|neg/<id>_<rating>.txt, plus unsup/ and the top files."""
    tree = Path(root) / "aclImdb"
    for split in ("train", "test"):
        for label, phrases, ratings in (("pos", POSITIVE, (7, 8, 9, 10)), ("neg", NEGATIVE, (1, 2, 3, 4))):
            folder = tree / split / label
            folder.mkdir(parents=True)
            for number in range(REVIEWS_PER_CLASS):
                (folder / f"{number}_{ratings[number % 4]}.txt").write_text(review_text(phrases, number))
    (tree / "train" / "unsup").mkdir()
    (tree / "train" / "unsup" / "0_0.txt").write_text("an unlabelled review")
    (tree / "imdb.vocab").write_text("the\nmovie\n")
    return tree
