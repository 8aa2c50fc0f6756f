"""bAbI loader: the official format on a fixture the test writes, pre-processing, errors, encoding."""

from pathlib import Path

import pytest
import torch

from engramlab.errors import DataError
from engramlab.tasks.babi import BabiVocab, load_babi, parse_babi, split_validation, tokenize

FIXTURE = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Where is Daniel? \thallway\t4
1 Sandra picked up the apple there.
2 Sandra took the milk.
3 What is Sandra carrying? \tapple,milk\t1 2
"""

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "babi" / "tasks_1-20_v1-2"


def write(tmp_path, text: str, name: str = "qa1_single-supporting-fact_train.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_stories_questions_supporting_facts_and_numbering_restarts(tmp_path):
    first, second, third = parse_babi(write(tmp_path, FIXTURE), task=1)
    assert first.story == (("mary", "moved", "to", "the", "bathroom"), ("john", "went", "to", "the", "hallway"))
    assert first.question == ("where", "is", "mary") and first.answer == "bathroom" and first.supporting == (0,)
    # the earlier question is not a statement: line 4 is the story's third statement
    assert len(second.story) == 3 and second.supporting == (2,) and second.story[2][0] == "daniel"
    # numbering restarts at 1: a new story, with nothing of the first
    assert third.story_id == first.story_id + 1 and len(third.story) == 2
    assert third.answer == "apple,milk" and third.supporting == (0, 1)


def test_preprocessing_lower_cases_and_drops_periods_and_question_marks():
    assert tokenize("Where is Mary? ") == ("where", "is", "mary")
    assert tokenize("John went to the hallway.") == ("john", "went", "to", "the", "hallway")


@pytest.mark.parametrize(
    "bad, line, message",
    [
        ("1 Mary moved.\nx John went.\n", 2, "expected '<number> <sentence>'"),
        ("1 Mary moved.\n3 John went.\n", 2, "line number 3 does not follow 1"),
        ("1 Mary moved.\n2 Where is Mary?\tbathroom\n", 2, "expected '<question>"),
        ("1 Mary moved.\n2 Where is Mary?\tbathroom\tone\n", 2, "expected '<question>"),
        ("1 Mary moved.\n2 Where is Mary?\tbathroom\t1\n3 Where?\tx\t2\n", 3, "supporting fact 2 is not a statement"),
    ],
)
def test_a_malformed_line_names_file_and_line(tmp_path, bad, line, message):
    path = write(tmp_path, bad)
    with pytest.raises(DataError, match=message) as error:
        parse_babi(path, task=1)
    assert str(error.value).startswith(f"{path}:{line}: ") and "\n" not in str(error.value)


def test_missing_files_are_one_clear_error_or_skipped(tmp_path):
    write(tmp_path, FIXTURE)
    with pytest.raises(DataError, match=r"no file qa3_\*_train.txt"):
        load_babi(tmp_path, "train", tasks=[1, 3])
    assert {e.task for e in load_babi(tmp_path, "train", tasks=[1, 3], skip_missing=True)} == {1}
    with pytest.raises(DataError, match="not a directory"):
        load_babi(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="task 21 does not exist"):
        load_babi(tmp_path, "train", tasks=[21])


def test_validation_split_is_seeded_disjoint_and_per_task(tmp_path):
    examples = [e for _ in range(10) for e in parse_babi(write(tmp_path, FIXTURE), task=1)]
    examples += [e.__class__(**{**e.__dict__, "task": 2}) for e in examples]
    train, valid = split_validation(examples, fraction=0.2, seed=3)
    assert len(valid) == 12 and len(train) == 48
    assert sum(e.task == 1 for e in valid) == sum(e.task == 2 for e in valid) == 6
    assert (train, valid) == split_validation(examples, fraction=0.2, seed=3)
    with pytest.raises(DataError, match="must be in"):
        split_validation(examples, fraction=1.0)


def test_encoding_gathers_each_examples_last_statements(tmp_path):
    examples = parse_babi(write(tmp_path, FIXTURE), task=1)
    vocab = BabiVocab(examples)
    data = vocab.encode(examples, max_words=4)
    assert len(data) == 3 and data.statements.shape == (5, 4)  # 3 + 2 statements, each stored once
    tokens, real = data.stories(torch.arange(3), max_sentences=2)
    assert tokens.shape == (3, 2, 4) and real.tolist() == [[True, True], [True, True], [True, True]]
    expected = [vocab.word_id[w] for w in ("john", "went", "to", "the")]  # cut to 4 words
    assert tokens[0, 1].tolist() == expected  # the most recent statement last
    assert tokens[1, 1, 0] == vocab.word_id["daniel"]
    tokens, real = data.stories(torch.tensor([2]), max_sentences=3)
    assert real.tolist() == [[False, True, True]] and tokens[0, 0].eq(0).all()  # padded at the front
    assert vocab.answers[data.answer[2]] == "apple,milk"


def test_answers_never_seen_in_training_map_to_the_unknown_answer(tmp_path):
    examples = parse_babi(write(tmp_path, FIXTURE), task=1)
    vocab = BabiVocab(examples[:2])
    assert vocab.encode(examples, max_words=6).answer.tolist()[2] == 0


@pytest.mark.skipif(not REAL.is_dir(), reason="the official release is not in ../shared/data")
def test_official_release_counts():
    train, test = load_babi(REAL / "en", "train"), load_babi(REAL / "en", "test")
    assert len(train) == len(test) == 20 * 1000
    assert max(len(e.story) for e in train) <= 320 and max(len(s) for e in train for s in e.story) <= 11
