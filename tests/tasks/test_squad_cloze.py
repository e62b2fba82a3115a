"""The benchmark's SQuAD v1.1-format cloze set (benchmarks/squad_cloze.py): real paragraphs, every answer at
its offset, train and dev disjoint, the same bytes every time, and readable by the squad task with every
question kept for training (its answer locatable in a window)."""
from __future__ import annotations

import json

from lmforge.tasks import featurize_all, get_task


def test_cloze_set_is_deterministic_extractable_and_disjoint(refdata, bert_tok, tmp_path, benchmark_module) -> None:
    cloze = benchmark_module("squad_cloze")
    text = refdata / "text" / "wikitext-2-test.txt"
    assert cloze.write(tmp_path / "a", train=40, dev=12, text_file=text) == {"train": 40, "dev": 12}
    cloze.write(tmp_path / "b", train=40, dev=12, text_file=text)
    for name in ("train.json", "dev.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    contexts = {}
    for split in ("train", "dev"):
        data = json.loads((tmp_path / "a" / f"{split}.json").read_text())
        assert data["version"] == "1.1"
        paras = [p for a in data["data"] for p in a["paragraphs"]]
        contexts[split] = {p["context"] for p in paras}
        for p in paras:
            assert p["context"] in " ".join(cloze.detokenize(line) for line in text.read_text().splitlines())
            for qa in p["qas"]:
                ans = qa["answers"][0]
                assert p["context"][ans["answer_start"]: ans["answer_start"] + len(ans["text"])] == ans["text"]
                body = qa["question"][:-1]  # the sentence with the answer replaced by "what"
                spots = [i for i in range(len(body)) if body.startswith("what", i)]
                assert qa["question"].endswith("?") and any(
                    body[:i] + ans["text"] + body[i + 4:] in p["context"] for i in spots)
    assert not contexts["train"] & contexts["dev"]
    task = get_task("squad", doc_stride=128)
    examples = task.read(tmp_path / "a", "train")
    assert len(examples) == 40
    features, _ = featurize_all(task, examples, bert_tok, max_length=384, training=True)
    assert {f["example_index"] for f in features} == set(range(40))  # every answer lies in a window
