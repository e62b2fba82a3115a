"""Task readers on the real reference samples (exact counts) and on broken files (clear errors)."""
from __future__ import annotations

import json

import pytest

from lmforge.errors import DataError
from lmforge.tasks import TASKS, get_task


def test_cola_train_and_dev_counts_and_fields(refdata):
    task = get_task("glue-cola")
    train = task.read(refdata / "glue" / "CoLA", "train")
    dev = task.read(refdata / "glue" / "CoLA", "dev")
    assert len(train) == 400 and len(dev) == 150
    assert train[0]["text"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert train[0]["label"] == 1 and train[0]["text_pair"] is None
    assert {ex["label"] for ex in train} == {0, 1}
    assert dev[0]["source"].endswith("dev_sample.tsv:1")


def test_sst2_rte_counts(refdata):
    sst = get_task("glue-sst2").read(refdata / "glue" / "SST-2", "dev")
    assert len(sst) == 200 and sst[0]["text"].startswith("it 's a charming") and sst[0]["label"] == 1
    rte_task = get_task("glue-rte")
    rte = rte_task.read(refdata / "glue" / "RTE", "val")  # SuperGLUE jsonl layout
    assert len(rte) == 277
    assert rte[0]["text"].startswith("Dana Reeve") and rte[0]["text_pair"] == "Christopher Reeve had an accident."
    assert rte_task.labels[rte[0]["label"]] == "not_entailment" and rte_task.labels[rte[1]["label"]] == "entailment"
    assert len(rte_task.read(refdata / "glue" / "RTE", "dev")) == 277  # dev -> val alias


def test_squad_v2_excerpt_and_v1_sample(refdata):
    v2 = get_task("squad-v2").read(refdata / "squad", "dev")
    assert len(v2) == 14 and sum(ex["impossible"] for ex in v2) == 6
    first = v2[0]
    assert first["question"] == "In what country is Normandy located?" and first["answers"][0] == "France"
    assert first["context"][first["span"][0]:first["span"][1]] == "France"
    v1 = get_task("squad").read(refdata / "squad" / "squad-v1.1-format-sample.json", "dev")
    assert len(v1) == 5 and not any(ex["impossible"] for ex in v1)
    with pytest.raises(DataError, match="squad-v2"):
        get_task("squad").read(refdata / "squad", "dev")  # unanswerable questions need squad-v2


def test_swag_and_ud_counts(refdata):
    swag = get_task("swag").read(refdata / "swag", "val")
    assert len(swag) == 11 and all(len(ex["endings"]) == 4 for ex in swag)
    assert swag[0]["context"] == "Students lower their eyes nervously." and swag[0]["lead"] == "She"
    assert swag[0]["label"] == 2
    pos = get_task("pos")
    ud = pos.read(refdata / "ud_english_ewt", "dev")
    assert len(ud) == 2001
    assert ud[0]["words"] == ["From", "the", "AP", "comes", "this", "story", ":"]
    assert [pos.labels[t] for t in ud[0]["tags"]] == ["ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"]
    # multi-word token ranges and empty nodes are skipped: 25,147 integer-id word lines in the file
    assert sum(len(ex["words"]) for ex in ud) == 25147


def test_registry_names():
    for name in ("glue-cola", "glue-sst2", "glue-mrpc", "glue-qqp", "glue-stsb", "glue-mnli", "glue-qnli",
                 "glue-rte", "glue-wnli", "squad", "squad-v2", "swag", "pos", "ner", "text"):
        assert name in TASKS
    with pytest.raises(DataError, match="glue-cola"):
        get_task("glue-cloa")


# ------------------------------------------------------------------------- bad input

def test_wrong_column_count_names_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("gj04\t1\t\tFine sentence.\ngj04\t0\tA broken row\n")
    with pytest.raises(DataError, match=r"train.tsv:2: 3 tab-separated fields"):
        get_task("glue-cola").read(tmp_path, "train")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nok\t1\nextra\t0\toops\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: 3 tab-separated fields, the header has 2"):
        get_task("glue-sst2").read(tmp_path, "dev")


def test_label_outside_label_set(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nok\t1\nbad\t2\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: label '2' is not one of"):
        get_task("glue-sst2").read(tmp_path, "dev")
    (tmp_path / "val.jsonl").write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"val.jsonl:1: label 'maybe'"):
        get_task("glue-rte").read(tmp_path, "val")


def test_empty_split_and_missing_split(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match="has no examples"):
        get_task("glue-sst2").read(tmp_path, "dev")
    with pytest.raises(DataError, match="no 'train' split"):
        get_task("glue-sst2").read(tmp_path, "train")


def test_squad_answer_not_at_answer_start_is_counted_reported_skipped(tmp_path):
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{
        "context": "Paris is the capital of France.",
        "qas": [{"id": "ok", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
                {"id": "bad", "question": "Country?", "answers": [{"text": "France", "answer_start": 3}]}]}]}]}
    (tmp_path / "train.json").write_text(json.dumps(data))
    task = get_task("squad")
    examples = task.read(tmp_path, "train")
    assert len(examples) == 2 and examples[1]["span"] is None
    assert len(task.messages) == 1 and "1 question(s)" in task.messages[0] and "bad" in task.messages[0]


def test_text_task_columns_and_label_set(tmp_path):
    (tmp_path / "train.csv").write_text('review,stars\n"great, really",pos\nawful,neg\nfine,pos\n')
    (tmp_path / "dev.jsonl").write_text('{"review": "meh", "stars": "neg"}\n{"review": "wow", "stars": "wow"}\n')
    task = get_task("text", text_column="review", label_column="stars")
    train = task.read(tmp_path, "train")
    assert task.labels == ["neg", "pos"] and [ex["label"] for ex in train] == [1, 0, 1]
    assert train[0]["text"] == "great, really"
    with pytest.raises(DataError, match=r"dev.jsonl:2: label 'wow'"):
        task.read(tmp_path, "dev")
    with pytest.raises(DataError, match="lacks column"):
        get_task("text", text_column="body").read(tmp_path, "train")
    assert TASKS["text"].labels is None  # the registry copy was not touched


def test_conll2003_reader_iob1(tmp_path):
    (tmp_path / "train.txt").write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n\n"
        "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n")
    task = get_task("ner")
    sents = task.read(tmp_path, "train")
    assert len(sents) == 2 and sents[1]["words"] == ["Peter", "Blackburn"]
    assert task.labels == ["O", "I-MISC", "I-ORG", "I-PER"]


@pytest.mark.parametrize("name,header,row,expect", [
    ("glue-mrpc", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\tHe said.\tHe says.", ("He said.", "He says.", 1)),
    ("glue-qqp", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "0\t1\t2\tWhy?\tHow?\t0", ("Why?", "How?", 0)),
    ("glue-stsb", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
     "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tAn air plane.\t5.000", ("A plane.", "An air plane.", 5.0)),
    ("glue-qnli", "index\tquestion\tsentence\tlabel", "0\tWho?\tHe did.\tentailment", ("Who?", "He did.", 0)),
    ("glue-wnli", "index\tsentence1\tsentence2\tlabel", "0\tI x.\tI y.\t1", ("I x.", "I y.", 1)),
    ("glue-mnli", "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
     "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
     "0\t1\t1e\tfiction\t-\t-\t-\t-\tA b.\tC d.\tneutral\tneutral\tneutral\tneutral\tneutral\tneutral", ("A b.", "C d.", 2)),
])
def test_glue_header_layouts(tmp_path, name, header, row, expect):
    split = "dev_matched" if name == "glue-mnli" else "dev"
    (tmp_path / f"{split}.tsv").write_text(f"{header}\n{row}\n", encoding="utf-8")
    (ex,) = get_task(name).read(tmp_path, "dev")
    assert (ex["text"], ex["text_pair"], ex["label"]) == expect


def test_glue_test_split_without_labels(tmp_path):
    (tmp_path / "test.tsv").write_text("index\tsentence\n0\tA test sentence.\n")
    (ex,) = get_task("glue-cola").read(tmp_path, "test")
    assert ex["text"] == "A test sentence." and ex["label"] is None and ex["id"] == "0"


def test_text_task_pair_column_tsv_and_jsonl(tmp_path, bert_tok):
    (tmp_path / "train.tsv").write_text("q\tdoc\ty\nIs it red?\tThe car is red.\tyes\nIs it big?\tIt is small.\tno\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps({"q": "Red?", "doc": "Blue.", "y": "no", "id": "d7"}) + "\n")
    task = get_task("text", text_column="q", pair_column="doc", label_column="y")
    train = task.read(tmp_path, "train")
    assert [(ex["text"], ex["text_pair"], task.labels[ex["label"]]) for ex in train] == [
        ("Is it red?", "The car is red.", "yes"), ("Is it big?", "It is small.", "no")]
    (dev,) = task.read(tmp_path, "dev")
    assert (dev["id"], dev["text_pair"], dev["label"]) == ("d7", "Blue.", task.labels.index("no"))
    # the pair is encoded as the second segment ([CLS] q [SEP] doc [SEP], segment ids 0 then 1)
    (f,) = task.featurize(train[0], bert_tok, max_length=32)
    assert f["input_ids"] == bert_tok("Is it red?", "The car is red.")["input_ids"] and 1 in f["token_type_ids"]
    with pytest.raises(DataError, match="lacks column"):
        get_task("text", text_column="q", pair_column="body", label_column="y").read(tmp_path, "train")


def test_tag_or_choice_outside_the_label_set_names_file_and_line(tmp_path):
    (tmp_path / "train.txt").write_text("EU NNP I-NP I-ORG\nrejects VBZ I-VP O\n")
    (tmp_path / "dev.txt").write_text("EU NNP I-NP I-ORG\n\nBonn NNP I-NP I-LOC\n")
    task = get_task("ner")
    task.read(tmp_path, "train")  # the tag set comes from the training split: O, I-ORG
    with pytest.raises(DataError, match=r"dev.txt:3: label 'I-LOC' is not one of this task's labels"):
        task.read(tmp_path, "dev")
    header = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label"
    (tmp_path / "val.csv").write_text(f"{header}\n0,v,1,s,He runs.,He,gold,a,b,c,d,4\n")
    with pytest.raises(DataError, match=r"val.csv:2: label '4' is not one of 0, 1, 2, 3"):
        get_task("swag").read(tmp_path, "val")
